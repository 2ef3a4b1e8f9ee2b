"""Each quickstart stage's config: the stage's recipe under `recipes/smollm2-135m/` plus the
quickstart's overrides, parsed by the same `parse_config` as `lema-hub <stage> --config`.

The recipe is the source of truth for every value the quickstart does not expose as an option;
the overrides are output paths under `output_dir` and `QuickstartConfig`'s fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lema_hub.cli import STAGES
from lema_hub.configs import ConfigError, check_config_mapping, load_yaml, parse_config

if TYPE_CHECKING:
    from lema_hub.quickstart import QuickstartConfig, _Layout

# Each stage's recipe, relative to `recipes_dir`.
RECIPES = {
    "collect": "collect/config_sample.yaml",
    "correct": "correct/config_reference.yaml",
    "correct_llm": "correct/config_endpoint.yaml",  # when corrector_base_url is set
    "build": "build/config_sample.yaml",
    "sft_cot": "sft/config_cot_lora.yaml",
    "sft_lema": "sft/config_lema_lora.yaml",
    "evaluate": "evaluate/config_sample.yaml",
}
_DEFAULT_RECIPES = Path("recipes") / "smollm2-135m"  # beside the package in the repository
VIEWS = ("cot", "lema")  # the two views the quickstart trains (the recipe builds the ablations too)


def _recipes_dir(cfg: QuickstartConfig) -> Path:
    here = Path(__file__).resolve().parent
    # The repository's recipes, else the copy the wheel ships (pyproject's force-include).
    repo, shipped = here.parent / _DEFAULT_RECIPES, here / "_recipes" / _DEFAULT_RECIPES.name
    default = repo if repo.is_dir() or not shipped.is_dir() else shipped
    folder = Path(cfg.recipes_dir) if cfg.recipes_dir else default
    if not folder.is_dir():
        raise ConfigError(f"recipes_dir {folder} is not a folder (pass --recipes_dir recipes/smollm2-135m).")
    return folder


def _config_types(stage: str) -> tuple[type, ...]:
    """The dataclasses `lema-hub <stage>` parses its config into (the CLI's own table)."""
    name = "sft" if stage.startswith("sft_") else stage.removesuffix("_llm")
    return tuple(STAGES[name].load()[0])


def _recipe(cfg: QuickstartConfig, stage: str) -> Path:
    return _recipes_dir(cfg) / RECIPES[stage]


def check_recipes(cfg: QuickstartConfig) -> None:
    """Fail before any stage runs if a recipe the run will use has an unknown or mistyped key."""
    for stage in RECIPES:
        if stage == ("correct" if cfg.corrector_base_url else "correct_llm"):
            continue
        path = _recipe(cfg, stage)
        check_config_mapping(load_yaml(path), _config_types(stage), str(path))


def _parse(cfg: QuickstartConfig, layout: _Layout, stage: str, overrides: dict[str, Any]) -> tuple[Any, ...]:
    """The stage's recipe plus `overrides`, parsed by `parse_config` as `lema-hub <stage> --config`
    would; the merged YAML stays in `.quickstart/<stage>.yaml` (re-run one stage with it)."""
    path = _recipe(cfg, stage)
    types = _config_types(stage)
    recipe = load_yaml(path)
    check_config_mapping(recipe, types, str(path))
    merged = layout.markers / f"{stage}.yaml"
    layout.markers.mkdir(parents=True, exist_ok=True)
    merged.write_text(
        f"# {path.name} ({RECIPES[stage]}) + the quickstart's overrides\n"
        + yaml.safe_dump({**recipe, **overrides}, sort_keys=False)
    )
    return parse_config(types, ["--config", str(merged)], prog=f"lema-hub quickstart ({stage})")


def collect_config(cfg: QuickstartConfig, layout: _Layout, prompt_style: str):
    (collect_cfg,) = _parse(
        cfg,
        layout,
        "collect",
        {
            "problems": cfg.problems,
            "problems_split": cfg.train_split,
            "problems_limit": cfg.train_limit,
            "output_dir": str(layout.mistakes),
            "model": cfg.model,
            "prompt_style": prompt_style,
            "num_samples": cfg.num_samples,
            "max_tokens": cfg.max_tokens,
            "include_unfinished": cfg.include_unfinished,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "progress": cfg.progress,
            "push_to_hub": False,  # the quickstart pushes every folder at the end (_push_all)
        },
    )
    return collect_cfg


def correct_config(cfg: QuickstartConfig, layout: _Layout):
    overrides: dict[str, Any] = {
        "mistakes": str(layout.mistakes),
        "output_dir": str(layout.corrections),
        "progress": cfg.progress,
        "push_to_hub": False,
    }
    if cfg.corrector_base_url:
        overrides |= {
            "backend": cfg.corrector_backend,
            "model": cfg.corrector_model,
            "base_urls": [cfg.corrector_base_url],
            "api_key_env": cfg.corrector_api_key_env,
        }
    (correct_cfg,) = _parse(cfg, layout, "correct_llm" if cfg.corrector_base_url else "correct", overrides)
    return correct_cfg


def build_config(cfg: QuickstartConfig, layout: _Layout, prompt_style: str):
    (build_cfg,) = _parse(
        cfg,
        layout,
        "build",
        {
            "problems": cfg.problems,
            "problems_split": cfg.train_split,
            "problems_limit": cfg.train_limit,
            "corrections": str(layout.corrections),
            "views": list(VIEWS),
            "prompt_style": prompt_style,
            "output_dir": str(layout.mixture),
            "seed": cfg.seed,
            "decontaminate": "sample_test" if cfg.problems == "sample" else None,
            "push_to_hub": False,
        },
    )
    return build_cfg


def sft_configs(cfg: QuickstartConfig, layout: _Layout, task: str, view: str, prompt_style: str):
    return _parse(
        cfg,
        layout,
        f"sft_{view}",
        {
            "model_name_or_path": cfg.model,
            "dataset_name": str(layout.mixture),
            "task": task,
            "view": view,
            "prompt_style": prompt_style,
            "output_dir": str(layout.model(view)),
            "max_steps": cfg.sft_max_steps,  # the same budget for both adapters
            "per_device_train_batch_size": cfg.sft_batch_size,
            # A few dozen steps, resumed by the stage marker: no checkpoint-* (with local paths in its
            # README) inside the folder that gets pushed.
            "save_strategy": "no",
            "seed": cfg.seed,
            "disable_tqdm": not cfg.progress,
            "push_to_hub": False,
            # The card's snippet and model name are the repo `_push_all` pushes to (no Trainer push).
            "hub_model_id": model_repo_id(cfg, task, view) if cfg.push_to_hub else None,
        },
    )


def eval_config(cfg: QuickstartConfig, layout: _Layout):
    (eval_cfg,) = _parse(
        cfg,
        layout,
        "evaluate",
        {
            "models": [cfg.model, str(layout.model("cot")), str(layout.model("lema"))],
            "model_labels": ["base", "cot", "lema"],
            "problems": cfg.problems,
            "problems_split": cfg.eval_split,
            "problems_limit": cfg.eval_limit,
            "output_dir": str(layout.eval),
            "max_new_tokens": cfg.eval_max_new_tokens,
            "batch_size": cfg.batch_size,
            "push_to_hub": False,
        },
    )
    return eval_cfg


SFT_HASHED = (
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "max_grad_norm",
    "max_length",
    "train_sampling_strategy",
    "seed",
)


def _model_slug(model: str) -> str:
    name = model.split(":", 1)[-1].rstrip("/").split("/")[-1]
    return name.lower().replace("_", "-")


def model_repo_id(cfg: QuickstartConfig, task: str, view: str) -> str:
    return f"{cfg.hub_namespace}/lema-{_model_slug(cfg.model)}-{task}" + ("-cot" if view == "cot" else "")
