"""Model cards, evaluation results (`.eval_results/`) and Space cards."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from lema_hub import PAPER_CITATION, PAPER_URL
from lema_hub.artifacts import _atomic_write_text, _dump_yaml, _safe_name, _scrub_string, sanitize
from lema_hub.cards.sweep import _carry_sweep_section
from lema_hub.cards.templates import _load_template
from lema_hub.models import EMBEDDED_MODELS, TINY_MODELS, is_hub_id
from lema_hub.problems import task_of
from lema_hub.schema import (
    _LICENSE_NAMES,
    _TASK_DATASETS,
    CHOICE_TASK,
    CODE_LICENSE,
    DEFAULT_NAMESPACE,
    EVAL_RESULTS_DIR,
    LOCAL_BENCHMARKS,
    LOCAL_EVAL_FILE,
    README,
    TASK_DATA_LICENSES,
)

_EVAL_START, _EVAL_END = "<!-- lema-hub:eval-results:start -->", "<!-- lema-hub:eval-results:end -->"
# The usage snippet of a CSQA-trained model: a question of the bundled CSQA sample's held-out split.
_CSQA_USAGE_QUESTION = "Where would you put dirty dishes so they can be cleaned?"
_CSQA_USAGE_CANDIDATES = ["sink", "bed", "car trunk", "closet", "mailbox"]


def _csqa_usage() -> dict[str, str]:
    """Python literals for the card's usage snippet: the question, its candidates, and the paper's
    CSQA prompt (`csqa.CSQA_PROMPT`, so the snippet cannot drift from what evaluation sends)."""
    from lema_hub.csqa import CSQA_PROMPT

    return {
        "question": json.dumps(_CSQA_USAGE_QUESTION),
        "candidates": json.dumps(_CSQA_USAGE_CANDIDATES),
        "template": json.dumps(CSQA_PROMPT),
    }


def _is_hub_dataset_id(dataset_id: str) -> bool:
    return dataset_id not in LOCAL_BENCHMARKS and is_hub_id(dataset_id)


def _read_eval_entries(folder: Path, local: bool = True) -> list[dict[str, Any]]:
    """Entries of every `.eval_results/*.yaml` (as written by `eval_result_entries_to_yaml`), then,
    with `local`, those of LOCAL_EVAL_FILE (benchmarks that are not Hub datasets)."""
    out = []
    paths = sorted((folder / EVAL_RESULTS_DIR).glob("*.yaml"))
    if local and (folder / LOCAL_EVAL_FILE).is_file():
        paths.append(folder / LOCAL_EVAL_FILE)
    for path in paths:
        data = yaml.safe_load(path.read_text()) or []
        out += [e for e in data if isinstance(e, dict)]
    return out


def _eval_section(folder: Path, tables: dict[str, str] | None = None) -> str:
    """The card's results section: a table over all `.eval_results` entries plus detail tables."""
    entries = _read_eval_entries(folder)
    if not entries:
        return f"{_EVAL_START}\nNo evaluation results yet (run `lema-hub evaluate`).\n{_EVAL_END}"
    lines = [_EVAL_START, "| benchmark | task | accuracy (%) | date | notes |", "|---|---|---:|---|---|"]
    for e in entries:
        ds = e.get("dataset", {})
        notes = str(e.get("notes") or "").replace("|", "\\|").replace("\n", " ")
        ds_id = str(ds.get("id"))
        bench = (
            f"`{ds_id}`"
            if _is_hub_dataset_id(ds_id)
            else LOCAL_BENCHMARKS.get(ds_id, f"`{ds_id}` (local, not on the Hub)")
        )
        lines.append(
            f"| {bench} | {ds.get('task_id')} | {e.get('value')} | {e.get('date') or ''} | {notes} |"
        )
    if _read_eval_entries(folder, local=False):
        lines += [
            "",
            f"The rows on Hub datasets are also stored in `{EVAL_RESULTS_DIR}/` for the Hub's leaderboards.",
        ]
    for task, md in sorted((tables or {}).items()):
        lines += [
            "",
            f"<!-- lema-hub:eval-table:{task} -->",
            md.strip(),
            f"<!-- /lema-hub:eval-table:{task} -->",
        ]
    lines.append(_EVAL_END)
    return "\n".join(lines)


def _existing_eval_tables(text: str) -> dict[str, str]:
    return dict(
        re.findall(r"<!-- lema-hub:eval-table:(\S+) -->\n(.*?)\n<!-- /lema-hub:eval-table:\1 -->", text, re.S)
    )


def write_eval_results(
    folder: str | os.PathLike, entries: list[dict], table_markdown: str | None = None
) -> None:
    """Write `.eval_results/<task>.yaml` (huggingface_hub `EvalResultEntry` format) and the card's results table.

    Entries with the same task replace that task's file; other tasks' files are kept. `ci_low`,
    `ci_high` and `n` (no fields of `EvalResultEntry`) are folded into its `notes`.
    """
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"write_eval_results: {folder} is not a folder.")
    by_task: dict[str, list[EvalResultEntry]] = {}
    for e in entries:
        missing = [k for k in ("dataset_id", "task_id", "value") if e.get(k) in (None, "")]
        if missing:
            raise ValueError(f"write_eval_results: entry {e!r} lacks {', '.join(missing)}.")
        notes = [str(e["notes"])] if e.get("notes") else []
        if e.get("ci_low") is not None and e.get("ci_high") is not None:
            notes.append(f"95% CI [{e['ci_low']}, {e['ci_high']}]")
        if e.get("n") is not None:
            notes.append(f"n={e['n']}")
        by_task.setdefault(str(e["task_id"]), []).append(
            EvalResultEntry(
                dataset_id=str(e["dataset_id"]),
                task_id=str(e["task_id"]),
                value=float(e["value"]),
                date=str(e["date"]) if e.get("date") else None,
                notes="; ".join(notes) or None,
            )
        )
    hub_tasks = {t: [e for e in es if _is_hub_dataset_id(e.dataset_id)] for t, es in by_task.items()}
    local_new = [e for es in by_task.values() for e in es if not _is_hub_dataset_id(e.dataset_id)]
    for task, task_entries in hub_tasks.items():
        path = folder / EVAL_RESULTS_DIR / f"{_safe_name(task)}.yaml"
        if task_entries:
            path.parent.mkdir(exist_ok=True)
            _atomic_write_text(path, _dump_yaml(eval_result_entries_to_yaml(task_entries)))
        else:
            path.unlink(missing_ok=True)  # e.g. an old entry that named a local benchmark as a Hub id
    if local_new:
        local_path = folder / LOCAL_EVAL_FILE
        kept = yaml.safe_load(local_path.read_text()) if local_path.is_file() else []
        kept = [
            e
            for e in kept or []
            if isinstance(e, dict) and e.get("dataset", {}).get("task_id") not in by_task
        ]
        header = "# Results on benchmarks that are not Hub datasets (so not in .eval_results/).\n"
        _atomic_write_text(local_path, header + _dump_yaml(kept + eval_result_entries_to_yaml(local_new)))
    readme = folder / README
    existing = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    tables = _existing_eval_tables(existing)
    if table_markdown:
        for task in by_task:
            tables[_safe_name(task)] = table_markdown
    section = _eval_section(folder, tables)
    if _EVAL_START in existing and _EVAL_END in existing:
        a, b = existing.index(_EVAL_START), existing.index(_EVAL_END) + len(_EVAL_END)
        _atomic_write_text(readme, existing[:a] + section + existing[b:])
    elif existing:
        _atomic_write_text(readme, existing.rstrip("\n") + "\n\n## Evaluation\n\n" + section + "\n")


def _model_license(info: dict[str, Any], folder: Path) -> str:
    if info.get("license"):
        return str(info["license"])
    name = str(info.get("base_model_name") or "")
    for key, spec in EMBEDDED_MODELS.items():
        tiny_of = {f"tiny:{t}" for t, (emb, _) in TINY_MODELS.items() if emb == key}
        if info.get("base_model") == spec.hub_id or name == f"embedded:{key}" or name in tiny_of:
            return spec.license
    return "other"


def _model_repo_id(info: dict[str, Any]) -> str:
    for name in (info.get("hub_model_id"), info.get("model_name")):
        if name and is_hub_id(str(name)):
            return str(name)
    return f"{DEFAULT_NAMESPACE}/{info['model_name']}"


def write_model_card(folder: str | os.PathLike, info: dict) -> None:
    """Render model_cards/model_card.md into folder/README.md with ModelCard.from_template.

    `base_model` is the Hub id (even when training started from an embedded or local copy); the
    results table is rebuilt from `.eval_results/*.yaml` and earlier detail tables are kept.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if not info.get("model_name"):
        raise ValueError("write_model_card: info['model_name'] is required.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = sanitize(dict(info), folder)
    adapter = bool(info.get("adapter"))
    base = info.get("base_model")
    task = info.get("task")
    datasets_ = [d for d in info.get("datasets") or [] if d]
    hub_datasets = [d for d in datasets_ if is_hub_id(str(d))]
    for d in [*(info.get("source_datasets") or []), _TASK_DATASETS.get(str(task))]:
        if d and _is_hub_dataset_id(str(d)) and d not in hub_datasets:
            hub_datasets.append(str(d))
    choice_task = bool(task) and task_of(str(task)) == CHOICE_TASK
    tags = ["lema", "learning-from-mistakes", "math", "reasoning", "trl", "sft"]
    if choice_task:  # a CSQA-trained model
        tags = ["lema", "learning-from-mistakes", "commonsense-reasoning", "multiple-choice", "reasoning"]
        tags += ["trl", "sft"]
    if adapter:
        tags += ["peft", "lora"]
    existing = (folder / README).read_text(encoding="utf-8") if (folder / README).is_file() else ""
    card_data = ModelCardData(
        model_name=info["model_name"],
        base_model=base or None,
        datasets=hub_datasets or None,
        license=_model_license(info, folder),
        language=["en"],
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
        **({"base_model_relation": "adapter" if adapter else "finetune"} if base else {}),
    )
    peft = info.get("peft") or None
    card = ModelCard.from_template(
        card_data,
        template_str=_load_template("model_cards", "model_card.md"),
        info=info,
        base_model_hub=base,
        base_model_name=info.get("base_model_name") or base,
        datasets_list=datasets_,
        adapter=adapter,
        peft=peft,
        training=info.get("training") or {},
        metrics={k: v for k, v in (info.get("metrics") or {}).items() if v is not None},
        repo_id=_model_repo_id(info),
        eval_section=_eval_section(folder, _existing_eval_tables(existing)),
        has_eval_results=bool(_read_eval_entries(folder, local=False)),
        local_datasets=[d for d in datasets_ if d not in hub_datasets],
        code_license=_LICENSE_NAMES.get(CODE_LICENSE, CODE_LICENSE),
        data_license=TASK_DATA_LICENSES.get(str(task)),
        choice_task=choice_task,
        csqa_usage=_csqa_usage() if choice_task else None,
        paper_url=PAPER_URL,
        citation=PAPER_CITATION,
    )
    text = _carry_sweep_section(existing, _scrub_string(str(card), folder))
    _atomic_write_text(folder / README, text if text.endswith("\n") else text + "\n")


def add_model_card_datasets(folder: str | os.PathLike, dataset_ids: list[str]) -> None:
    """Name Hub datasets in a model card's `datasets:` (e.g. the mixture once it is pushed)."""
    from huggingface_hub import ModelCard

    path = Path(folder) / README
    card = ModelCard.load(path)
    names = list(card.data.datasets or [])
    card.data.datasets = names + [d for d in dataset_ids if d not in names]
    _atomic_write_text(path, str(card) if str(card).endswith("\n") else str(card) + "\n")


def write_space_card(folder: str | os.PathLike, info: dict) -> None:
    """Write a Space README.md (SpaceCardData: sdk gradio, sdk_version, app_file, models, datasets).

    info keys: title, app_file (default app.py), models, datasets, license, emoji, short_description,
    sdk_version (default: the installed gradio's), body (extra Markdown).
    """
    from huggingface_hub import SpaceCard, SpaceCardData

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sdk_version = info.get("sdk_version")
    if not sdk_version:
        try:
            import gradio

            sdk_version = gradio.__version__
        except ImportError:
            sdk_version = None
    app_file = info.get("app_file") or "app.py"
    card_data = SpaceCardData(
        title=info.get("title") or "LeMa: learning from mistakes",
        sdk="gradio",
        sdk_version=sdk_version,
        app_file=app_file,
        license=info.get("license") or "apache-2.0",
        models=[m for m in info.get("models") or [] if m] or None,
        datasets=[d for d in info.get("datasets") or [] if d] or None,
        tags=["lema", "math", "reasoning"],
        emoji=info.get("emoji") or "🧮",
        colorFrom=info.get("colorFrom") or "indigo",
        colorTo=info.get("colorTo") or "green",
        short_description=info.get("short_description") or "Solve, correct and browse LeMa mistakes",
        pinned=False,
    )
    card = SpaceCard.from_template(
        card_data,
        template_str=_load_template("model_cards", "space_card.md"),
        info=sanitize(dict(info), folder),
        paper_url=PAPER_URL,
        citation=PAPER_CITATION,
    )
    text = _scrub_string(str(card), folder)
    _atomic_write_text(folder / README, text if text.endswith("\n") else text + "\n")
