"""`lema-hub quickstart`: the whole LeMa pipeline on the bundled sample, offline, on CPU.

collect mistakes -> correct them -> build `cot` and `lema` views -> two LoRA adapters with the
same budget -> evaluate base / CoT-only / LeMa on the held-out sample -> cards -> (push).

Each stage's config is its recipe under `recipes/smollm2-135m/` (`recipes_dir`), parsed by the
same `parse_config` as `lema-hub <stage> --config`, plus the quickstart's overrides (output paths
under `output_dir`, model, limits, budget, seed, corrector, push); the merged YAML of each stage is
written to `<output_dir>/.quickstart/<stage>.yaml`.

Each finished stage leaves a marker in `<output_dir>/.quickstart/` holding a hash of the
stage's config; a re-run skips stages whose marker matches, and the stages themselves resume
half-finished work through the generation cache. `--fresh true` starts over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lema_hub.build import build
from lema_hub.cards.model import add_model_card_datasets
from lema_hub.collect import CollectSummary, collect, set_aside_text
from lema_hub.configs import config_to_dict, redact
from lema_hub.correct import correct
from lema_hub.errors import InvalidInputError
from lema_hub.evaluate import evaluate
from lema_hub.models import resolve_prompt_style
from lema_hub.push import push_folder
from lema_hub.quickstart_configs import (
    SFT_HASHED,
    build_config,
    check_recipes,
    collect_config,
    correct_config,
    eval_config,
    model_repo_id,
    sft_configs,
)
from lema_hub.schema import AUTO, DEFAULT_MODEL
from lema_hub.sft import train

logger = logging.getLogger(__name__)

STAGE_ORDER = ("collect", "correct", "build", "sft_cot", "sft_lema", "evaluate", "push")


@dataclass
class QuickstartConfig:
    """Options of `lema-hub quickstart` (defaults: ~10 minutes on 2 CPU cores).

    Each stage's config is its recipe under `recipes_dir` (parsed as `lema-hub <stage> --config`
    parses it) with these fields laid over it; every other value is the recipe's.
    """

    output_dir: str = field(
        default="outputs/quickstart", metadata={"help": "Where every artifact folder goes."}
    )
    recipes_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the stage recipes the quickstart starts from (<stage>/config_*.yaml); "
            "default: the repository's recipes/smollm2-135m."
        },
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": "Model that makes the mistakes and is fine-tuned (a name lema_hub.models accepts)."
        },
    )
    problems: str = field(
        default="sample", metadata={"help": "Problem source (the bundled sample by default)."}
    )
    train_split: str = field(default="train", metadata={"help": "Split mistakes are collected on."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split for the evaluation."})
    train_limit: int | None = field(
        default=None, metadata={"help": "Use only the first N training problems."}
    )
    eval_limit: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N held-out problems."}
    )
    num_samples: int = field(default=2, metadata={"help": "Sampled paths per training problem."})
    max_tokens: int = field(default=192, metadata={"help": "Max new tokens per sampled path."})
    include_unfinished: bool = field(
        default=False,
        metadata={"help": "Also send paths with no final answer or cut at max_tokens to the corrector."},
    )
    batch_size: int = field(default=32, metadata={"help": "Local generation batch size."})
    corrector_backend: str = field(
        default="reference",
        metadata={"help": "reference (rule-based, offline) or openai (any OpenAI-compatible endpoint)."},
    )
    corrector_model: str | None = field(
        default=None, metadata={"help": "Corrector model served at the endpoint."}
    )
    corrector_base_url: str | None = field(
        default=None,
        metadata={
            "help": "Endpoint for an LLM corrector (e.g. `transformers serve`, vLLM, OpenAI). Setting it "
            "switches corrector_backend to openai."
        },
    )
    corrector_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable holding the corrector's API key."}
    )
    sft_max_steps: int = field(
        default=24, metadata={"help": "Optimizer steps for EACH adapter (same budget)."}
    )
    sft_batch_size: int = field(default=2, metadata={"help": "Per-device train batch size."})
    eval_max_new_tokens: int = field(default=256, metadata={"help": "Max new tokens per evaluation answer."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling and training."})
    fresh: bool = field(default=False, metadata={"help": "Delete output_dir and start over."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push every artifact (needs hub_namespace)."})
    hub_namespace: str | None = field(
        default=None, metadata={"help": "User or org to push to: <ns>/lema-..."}
    )
    hub_private: bool = field(default=False, metadata={"help": "Create private repos."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if self.corrector_base_url and self.corrector_backend == "reference":
            self.corrector_backend = "openai"
        if self.corrector_backend != "reference" and not (self.corrector_model and self.corrector_base_url):
            raise InvalidInputError("An LLM corrector needs corrector_model and corrector_base_url.")
        if self.push_to_hub and not self.hub_namespace:
            raise InvalidInputError("push_to_hub needs hub_namespace (the user or org to push to).")
        for name in ("num_samples", "sft_max_steps", "sft_batch_size", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}.")


class StageFailed(RuntimeError):
    """A quickstart stage failed; earlier stages' outputs are left intact."""


@dataclass
class _Layout:
    root: Path

    @property
    def markers(self) -> Path:
        return self.root / ".quickstart"

    @property
    def mistakes(self) -> Path:
        return self.root / "lema-mistakes"

    @property
    def corrections(self) -> Path:
        return self.root / "lema-corrections"

    @property
    def mixture(self) -> Path:
        return self.root / "lema-mixture"

    def model(self, view: str) -> Path:
        return self.root / "models" / view

    @property
    def eval(self) -> Path:
        return self.root / "eval"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _digest(layout: _Layout, name: str) -> str:
    """The finished stage's spec hash: later stages depend on it, so a re-run stage re-runs them."""
    return json.loads((layout.markers / f"{name}.json").read_text())["spec_hash"]


def _run_stage(
    layout: _Layout,
    name: str,
    spec: dict[str, Any],
    fn: Callable[[], dict[str, Any]],
    timings: dict[str, float | None],
) -> dict[str, Any]:
    """Run `fn` unless a marker with the same spec hash says it already finished."""
    marker = layout.markers / f"{name}.json"
    # Paths inside the run folder are hashed relative to it, so a moved run folder still resumes.
    digest = _hash(json.loads(json.dumps(spec, default=str).replace(str(layout.root), "<run>")))
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("spec_hash") == digest:
            timings[name] = None  # skipped
            print(format_stage_line(name, saved["result"], None), flush=True)
            return saved["result"]
    start = time.perf_counter()
    logger.debug("quickstart: stage %s", name)
    try:
        result = fn() or {}
    except Exception as exc:  # name the stage, keep what earlier stages wrote
        raise StageFailed(f"quickstart stage {name!r} failed: {type(exc).__name__}: {exc}") from exc
    timings[name] = round(time.perf_counter() - start, 1)
    result = json.loads(json.dumps(result, default=str))
    layout.markers.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"spec_hash": digest, "seconds": timings[name], "result": result}, indent=2))
    if name not in _STAGES_WITH_OWN_LINE:
        print(format_stage_line(name, result, timings[name]), flush=True)
    return result


# Stages that print their own one-line summary when they run (collect: lema_hub.collect).
_STAGES_WITH_OWN_LINE = ("collect",)


def _quietly(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a stage with its stdout (the Trainer's metric dicts and tables) swallowed; progress bars
    are on stderr and stay. The same numbers are in the model folder's trainer_state.json."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def quiet_console() -> None:
    """What the quickstart's console shows: our stage lines and progress bars, no library chatter.

    Libraries' INFO logs (matplotlib's "generated new fontManager", the stages' dict-valued log
    lines) stay below the root logger's WARNING level, and the datasets / transformers progress bars
    (parquet writing, weight loading, GGUF conversion) are off; the engine's and trainer's own bars
    (with rate and ETA) remain. Every detail is in each folder's run_summary.json.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)  # also when a caller configured logging before
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")
    for name in ("matplotlib", "PIL", "httpx", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import datasets.utils.logging as ds_logging

        ds_logging.disable_progress_bar()
        ds_logging.set_verbosity_warning()
    except ImportError:
        pass
    try:
        import transformers.utils.logging as tf_logging

        tf_logging.disable_progress_bar()
        tf_logging.set_verbosity_warning()
    except ImportError:
        pass


def _pct(x: Any) -> str:
    return f"{x:.0%}" if isinstance(x, (int, float)) else "?"


def _rate(n: Any, seconds: float | None, unit: str) -> str:
    if not seconds or not isinstance(n, (int, float)):
        return ""
    return f", {n / seconds:.1f} {unit}/s"


def _words(counts: dict[str, Any]) -> str:
    """`{"wrong_answer": 3, "parse_error": 1}` -> `wrong answer 3, parse error 1`."""
    return ", ".join(f"{str(k).replace('_', ' ')} {v}" for k, v in counts.items())


def format_stage_line(name: str, result: dict[str, Any], seconds: float | None) -> str:
    """One line a person reads for a finished (or earlier finished) stage: counts and rates."""
    r = result or {}
    if name == "collect":
        n = r["samples"]
        body = (
            f"{r['problems']} problems, {n} sampled paths: {r['correct']} correct, "
            f"{r['wrong']} wrong; {r['mistakes']} mistakes kept"
        )
        rate = _rate(n, seconds, "paths")
    elif name == "correct":
        reasons = r.get("reject_reasons") or {}
        body = (
            f"{r.get('accepted', '?')} of {r.get('n', '?')} corrections accepted ({_pct(r.get('acceptance_rate'))}) "
            f"from corrector {r.get('corrector', '?')}"
            + (f"; rejected: {_words(reasons)}" if reasons else "")
        )
        rate = _rate(r.get("n"), seconds, "corrections")
    elif name == "build":
        views = r.get("views") or {}
        body = "; ".join(
            f"view {v}: {c.get('total')} rows ({c.get('cot')} CoT + {c.get('correction')} corrections)"
            for v, c in views.items()
        )
        rate = ""
    elif name.startswith("sft_"):
        loss = (r.get("metrics") or {}).get("train_loss")
        body = f"{r.get('global_step', '?')} steps on {r.get('train_rows', '?')} rows" + (
            f", train loss {loss:.3f}" if isinstance(loss, (int, float)) else ""
        )
        rate = _rate(r.get("global_step"), seconds, "steps")
    elif name == "evaluate":
        parts = []
        for res in (r.get("results") or {}).values():
            if isinstance(res, dict) and "accuracy" in res:
                parts.append(
                    f"{res.get('model_label', '?')} {res['accuracy']:.0%} "
                    f"(95% CI {res.get('ci_low', 0):.0%}–{res.get('ci_high', 0):.0%})"
                )
        n = next((x.get("n") for x in (r.get("results") or {}).values() if isinstance(x, dict)), "?")
        body = f"pass@1 on {n} held-out problems: " + ", ".join(parts)
        rate = ""
    elif name == "push":
        body = f"{len(r)} repos pushed"
        rate = ""
    else:
        body = ""
        rate = ""
    when = "done before" if seconds is None else f"{seconds:.0f} s{rate}"
    label = name.replace("sft_", "sft ")
    return f"{label:<9} {body} · {when}"


def _push_all(cfg: QuickstartConfig, layout: _Layout, task: str) -> dict[str, str]:

    ns = cfg.hub_namespace
    for view in ("cot", "lema"):  # the adapters' cards name the mixture they were trained on
        add_model_card_datasets(layout.model(view), [f"{ns}/lema-mixture"])
    targets = [
        (layout.mistakes, f"{ns}/lema-mistakes", "dataset"),
        (layout.corrections, f"{ns}/lema-corrections", "dataset"),
        (layout.mixture, f"{ns}/lema-mixture", "dataset"),
        (layout.eval, f"{ns}/lema-eval-details", "dataset"),
        (layout.model("cot"), model_repo_id(cfg, task, "cot"), "model"),
        (layout.model("lema"), model_repo_id(cfg, task, "lema"), "model"),
    ]
    return {
        str(folder.relative_to(layout.root)): push_folder(
            folder,
            repo_id,
            repo_type=kind,
            private=cfg.hub_private,
            commit_message=f"lema-hub quickstart: {folder.name}",
        )
        for folder, repo_id, kind in targets
    }


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    """Run (or resume) every stage and print the summary; returns it."""

    quiet_console()
    check_recipes(cfg)  # a bad key in the evaluate recipe fails now, not after training
    layout = _Layout(Path(cfg.output_dir))
    if cfg.fresh and layout.root.exists():
        shutil.rmtree(layout.root)
    layout.root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float | None] = {}
    results: dict[str, dict[str, Any]] = {}
    wall = time.perf_counter()

    style = resolve_prompt_style(
        AUTO, cfg.model
    )  # one style for every stage: the recipes' `chat` fits only chat models
    collect_cfg = collect_config(cfg, layout, style)
    results["collect"] = _run_stage(
        layout, "collect", asdict(collect_cfg), lambda: collect(collect_cfg), timings
    )

    correct_cfg = correct_config(cfg, layout)
    results["correct"] = _run_stage(
        layout,
        "correct",
        {**asdict(correct_cfg), "after": _digest(layout, "collect")},
        lambda: correct(correct_cfg),
        timings,
    )

    build_cfg = build_config(cfg, layout, style)
    results["build"] = _run_stage(
        layout,
        "build",
        {**asdict(build_cfg), "after": _digest(layout, "correct")},
        lambda: build(build_cfg),
        timings,
    )
    task = results["build"].get("config_prefix") or results["build"].get("task") or cfg.problems

    for view in ("cot", "lema"):
        sft = sft_configs(cfg, layout, task, view, style)
        training = sft[1]
        spec = {
            **redact(config_to_dict(sft[0], sft[2])),
            # TrainingArguments' own dict holds run-dependent values; hash the ones that shape training
            **{k: getattr(training, k) for k in SFT_HASHED},
            "after": _digest(layout, "build"),
        }
        results[f"sft_{view}"] = _run_stage(
            layout, f"sft_{view}", spec, lambda s=sft: _quietly(train, *s), timings
        )

    eval_cfg = eval_config(cfg, layout)
    results["evaluate"] = _run_stage(
        layout,
        "evaluate",
        {**asdict(eval_cfg), "after": [_digest(layout, "sft_cot"), _digest(layout, "sft_lema")]},
        lambda: evaluate(eval_cfg),
        timings,
    )

    if cfg.push_to_hub:
        results["push"] = _run_stage(
            layout,
            "push",
            {"ns": cfg.hub_namespace, "after": _digest(layout, "evaluate")},
            lambda: _push_all(cfg, layout, task),
            timings,
        )

    summary = _summary(cfg, layout, results, timings, time.perf_counter() - wall)
    (layout.root / "quickstart_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(format_summary(summary))
    return summary


def _summary(
    cfg: QuickstartConfig,
    layout: _Layout,
    results: dict[str, dict[str, Any]],
    timings: dict[str, float | None],
    wall: float,
) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "problems": cfg.problems,
        "stages": results,
        "seconds": timings,
        "wall_seconds": round(wall, 1),
        "demo_command": _demo_command(layout),
        "folders": {
            "mistakes": str(layout.mistakes),
            "corrections": str(layout.corrections),
            "mixture": str(layout.mixture),
            "cot_adapter": str(layout.model("cot")),
            "lema_adapter": str(layout.model("lema")),
            "eval": str(layout.eval),
        },
    }


def _demo_command(layout: _Layout) -> str:
    if layout.root == Path("outputs/quickstart"):  # the demo's own defaults
        return "lema-hub demo"
    return (
        f"lema-hub demo --lema_model {layout.model('lema')}-merged --baseline_model {layout.model('cot')}-merged "
        f"--corrections {layout.corrections} --mistakes {layout.mistakes}"
    )


def _collect_aside(col: CollectSummary) -> str:
    aside = set_aside_text(col)
    return f" ({aside})" if aside else ""


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable end-of-run summary."""
    st = summary["stages"]
    col: CollectSummary = st["collect"]
    cor, bld = st.get("correct", {}), st.get("build", {})
    lines = ["", "=" * 72, "LeMa quickstart summary", "=" * 72]
    lines.append(f"model: {summary['model']}   problems: {summary['problems']}")
    lines.append(
        f"collect   {col['problems']} problems, {col['samples']} sampled paths "
        f"({col['correct']} correct, {col['wrong']} wrong), "
        f"{col['mistakes']} mistakes kept{_collect_aside(col)}; "
        f"{col['prompt_tokens']} prompt + {col['completion_tokens']} completion tokens"
    )
    acc = cor.get("acceptance_rate")
    reasons = ", ".join(f"{k} {v}" for k, v in (cor.get("reject_reasons") or {}).items())
    lines.append(
        f"correct   corrector {cor.get('corrector', '?')}: {cor.get('accepted', '?')} accepted / "
        f"{cor.get('n', '?')}"
        + (f" (acceptance {acc:.1%})" if isinstance(acc, (int, float)) else "")
        + (f"; rejected: {reasons}" if reasons else "")
    )
    views = bld.get("views") or {}
    lines.append(
        "build     "
        + ", ".join(
            f"{v}: {c.get('total')} rows ({c.get('cot')} CoT + {c.get('correction')} corrections)"
            for v, c in views.items()
        )
    )
    for view in ("cot", "lema"):
        sft = st.get(f"sft_{view}", {})
        loss = (sft.get("metrics") or {}).get("train_loss")
        if sft:
            lines.append(
                f"sft {view:<5} {sft.get('global_step', '?')} steps on {sft.get('train_rows', '?')} rows"
                + (f", train loss {loss:.3f}" if isinstance(loss, (int, float)) else "")
            )
    for res in ((st.get("evaluate") or {}).get("results") or {}).values():
        if isinstance(res, dict) and "accuracy" in res:
            lines.append(
                f"evaluate  {res.get('model_label', '?'):<5} pass@1 {res['accuracy']:.1%} "
                f"(95% CI {res.get('ci_low', 0):.1%}-{res.get('ci_high', 0):.1%}) on {res.get('n', '?')} held-out "
                f"problems, {res.get('mean_output_tokens', 0):.0f} output tokens on average"
            )
    lines.append(
        "seconds   "
        + ", ".join(
            f"{k} {'(done before)' if v is None else f'{v:.0f}'}" for k, v in summary["seconds"].items()
        )
        + f"   (wall {summary['wall_seconds']:.0f})"
    )
    lines.append("folders")
    lines += [f"  {k:<13} {v}" for k, v in summary["folders"].items()]
    if st.get("push"):
        lines.append("pushed")
        lines += [f"  {k:<13} {v}" for k, v in st["push"].items()]
    lines += [
        "",
        "Open the demo on these outputs:",
        f"  {summary['demo_command']}",
        "",
        "What this run shows: every LeMa stage end to end on your machine, with real artifacts and cards.",
        "What it cannot show: a 135M model tuned for a few dozen LoRA steps on ~30 problems is not expected",
        "to move accuracy beyond noise: compare the intervals above, not the point estimates. For the",
        "paper-scale run (GSM8K train, GPT-4 corrections, LLaMA-2 QLoRA) use recipes/llama-2-7b/ or,",
        "on one GPU, recipes/qwen2.5-1.5b/ (see README.md).",
    ]
    return "\n".join(lines)
