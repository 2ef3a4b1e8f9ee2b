"""Dataset cards: `write_dataset_card` renders dataset_cards/<kind>.md from the folder's own data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lema_hub import PAPER_CITATION, PAPER_URL
from lema_hub.artifacts import (
    _atomic_write_text,
    _configs_metadata,
    _is_main_config,
    _read_card,
    _read_tables,
    _scrub_string,
    read_run_record,
)
from lema_hub.cards.plots import _rows_per_config_plot
from lema_hub.cards.stats import (
    _KIND_STATS,
    _any_truthy,
    _distinct,
    _iter_column,
    _price_table,
    _token_usage,
)
from lema_hub.cards.templates import _load_template
from lema_hub.models import is_hub_id
from lema_hub.problems import task_of
from lema_hub.schema import (
    _LICENSE_NAMES,
    _PRETTY,
    _REPO_NAMES,
    CHOICE_TASK,
    CORRECTOR_TOKENS,
    DEFAULT_NAMESPACE,
    GENERATOR_TOKENS,
    IMAGES_DIR,
    KINDS,
    README,
    REFERENCE_CORRECTOR,
    SOURCES,
    TASK_DATA_LICENSES,
)


def _size_category(n: int) -> str:
    for limit, label in [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ]:
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"


def _card_excerpt(text: Any, limit: int = 1200) -> str:
    text = "" if text is None else str(text)
    text = text.replace("```", "'''")
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def _render_messages(value: Any) -> str:
    if isinstance(value, list):
        return "\n\n".join(
            f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in value if isinstance(m, dict)
        )
    return "" if value is None else str(value)


def _numbered(steps: Any) -> str:
    if not steps:
        return "(none)"
    return "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))


_SCALAR_FIELDS = (
    "problem_id",
    "source",
    "level",
    "subject",
    "generator",
    "sample_index",
    "verdict",
    "predicted_answer",
    "gold_answer",
    "finish_reason",
    "corrector",
    "corrector_prompt",
    "incorrect_step",
    "reference_step",
    "labelled_step",
    "prediction",
    "predicted_step",
    "corrected_answer",
    "accepted",
    "reject_reason",
    "kind",
    "model",
    "correct",
)
_TEXT_FIELDS = (
    ("question", "Question", None),
    ("steps", "Sampled path (steps)", _numbered),
    ("explanation", "Explanation of the incorrect step", None),
    ("corrected_steps", "Corrected solution", _numbered),
    ("prompt", "Prompt", _render_messages),
    ("completion", "Completion", _render_messages),
)


def _sample_record_md(config: str, row: dict[str, Any]) -> str:
    """One record rendered for humans: a field table and fenced text blocks."""
    lines = [f"#### `{config}`", "", "| field | value |", "|---|---|"]
    for key in _SCALAR_FIELDS:
        if key in row and row[key] is not None:
            val = str(row[key]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{key}` | {_card_excerpt(val, 200)} |")
    for key, title, fmt in _TEXT_FIELDS:
        if key == "completion" and row.get("steps"):
            continue  # a sampled path is shown as its steps already
        if key in row and row[key] not in (None, "", []):
            text = fmt(row[key]) if fmt else str(row[key])
            lines += ["", f"**{title}**", "", "```text", _card_excerpt(text), "```"]
    return "\n".join(lines)


def _first_row(tables: dict[str, dict[str, Any]], config: str) -> dict[str, Any] | None:
    for split in ("train", "test", *tables.get(config, {})):
        t = tables.get(config, {}).get(split)
        if t is not None and t.num_rows:
            return t.slice(0, 1).to_pylist()[0]
    return None


def _repo_id_for(kind: str, configs: dict[str, Any], repo_id: str | None) -> tuple[str, bool]:
    """(repo id for snippets, whether it is real) — the recipe's hub_repo_id when one was set."""
    if repo_id:
        return repo_id, True
    for cfg in configs.values():
        if isinstance(cfg, dict) and isinstance(cfg.get("hub_repo_id"), str) and cfg["hub_repo_id"]:
            return cfg["hub_repo_id"], True
    return f"{DEFAULT_NAMESPACE}/{_REPO_NAMES[kind]}", False


def _license_text(license_: str | list[str]) -> str:
    names = [license_] if isinstance(license_, str) else license_
    return " / ".join(_LICENSE_NAMES.get(n, n) for n in names)


def _sources_info(sources: list[str]) -> tuple[list[str], list[str] | str]:
    """(source_datasets, license) from the problem sources found in the data."""
    hub_ids, licenses = [], []
    for s in sorted(set(sources)):
        if s in SOURCES:
            hub_id, lic = SOURCES[s]
            if hub_id:
                hub_ids.append(hub_id)
            else:
                hub_ids.append("original")
            licenses.append(lic)
        elif is_hub_id(s):
            hub_ids.append(s)
        else:
            hub_ids.append("original")
    hub_ids = sorted(set(hub_ids))
    licenses = sorted(set(licenses)) or ["other"]
    return hub_ids, licenses[0] if len(licenses) == 1 else licenses


def _task_families(tables: dict[str, dict[str, Any]]) -> tuple[bool, bool]:
    """(whether any rows are multiple choice (CSQA), whether any are math): by the rows' `source`,
    or a `candidates` column holding answer choices."""
    tasks = {task_of(str(s)) for s in _distinct(tables, "source") if s}
    choice = CHOICE_TASK in tasks or _any_truthy(tables, "candidates")
    return choice, bool(tasks - {CHOICE_TASK}) or not choice


def _prov_values(tables: dict, name: str) -> list[str]:
    return sorted(
        {
            json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v)
            for splits in tables.values()
            for t in splits.values()
            for v in _iter_column(t, name)
            if v not in (None, "")
        }
    )


def write_dataset_card(
    folder: str | os.PathLike,
    kind: str,
    repo_id: str | None = None,
    prices: dict[str, dict[str, float]] | None = None,
) -> None:
    """Render dataset_cards/<kind>.md into folder/README.md from the folder's own data.

    Every number (rows per config/split, acceptance rate, reject reasons, token usage...) is computed
    from the parquet files, `run_summary.json` and `lema_hub_config.yaml`; plots go to images/.
    `prices` ($ per million tokens per model, {"model": {"input": x, "output": y}}) turns token
    usage into an estimated cost; without a price a remote model's cost is "unknown".
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    if kind not in KINDS:
        raise ValueError(f"Unknown dataset card kind {kind!r}; expected one of {', '.join(KINDS)}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"write_dataset_card: {folder} is not a folder.")
    meta, _ = _read_card(folder)
    configs_meta = _configs_metadata(folder, meta.get("configs"))
    tables = _read_tables(folder)
    if not tables:
        raise ValueError(f"write_dataset_card: {folder} has no data/<config>/*.parquet to describe.")
    run_configs, summaries = read_run_record(folder)
    order = [c["config_name"] for c in configs_meta]
    main = [c for c in order if _is_main_config(c)]
    counts = [
        {"config": c, "split": s, "rows": t.num_rows} for c in order for s, t in sorted(tables[c].items())
    ]
    total = sum(c["rows"] for c in counts)
    sources = [s for s in _distinct(tables, "source") if s]  # the distinct values, never one per row
    source_ids, license_ = _sources_info([str(s) for s in sources])
    repo, repo_known = _repo_id_for(kind, run_configs, repo_id)
    prices_all = _price_table(run_configs, prices)
    if (folder / IMAGES_DIR).is_dir():  # plots are re-drawn from the current data
        for old in (folder / IMAGES_DIR).glob("*.png"):
            old.unlink()
    ctx: dict[str, Any] = {"images": [], "reference_corrector_name": REFERENCE_CORRECTOR}
    _KIND_STATS[kind](folder, tables, main, ctx)
    if not ctx["images"]:
        ctx["images"].append(("Rows per config and split", _rows_per_config_plot(folder, counts)))
    ctx["images"] = [{"caption": c, "path": p} for c, p in ctx["images"] if p]
    usage = _token_usage(
        tables, GENERATOR_TOKENS, [c for c in order if c.endswith("-samples")] or main, prices_all
    )
    if kind in ("corrections", "corrector_bench"):  # the corrector's own columns, not the generator's
        usage = _token_usage(tables, CORRECTOR_TOKENS, order, prices_all)
    samples_md = []
    for cfg in order:
        row = _first_row(tables, cfg)
        if row is not None:
            samples_md.append(_sample_record_md(cfg, row))
    subjects = {str(s) for s in _distinct(tables, "subject") if s}
    choice_task, math_task = _task_families(tables)
    card_data = DatasetCardData(
        language=["en"],
        license=license_,
        pretty_name=_PRETTY[kind],
        size_categories=[_size_category(total)],
        source_datasets=source_ids or None,
        task_categories=["text-generation", "question-answering"]
        + (["multiple-choice"] if choice_task else []),
        tags=(["math"] if math_task else [])
        + ["reasoning", "lema", "learning-from-mistakes", "synthetic", "chain-of-thought"]
        + (["commonsense-reasoning", "multiple-choice"] if choice_task else []),
        configs=configs_meta,
    )
    extra = {k: v for k, v in meta.items() if k not in card_data.to_dict() and k != "configs"}
    for k, v in extra.items():  # metadata someone else added (e.g. on the Hub) is kept
        setattr(card_data, k, v)
    card = DatasetCard.from_template(
        card_data,
        template_str=_load_template("dataset_cards", f"{kind}.md"),
        kind=kind,
        pretty_name=_PRETTY[kind],
        repo_id=repo,
        repo_id_known=repo_known,
        folder_name=folder.name,
        configs=order,
        main_configs=main,
        first_config=main[0] if main else order[0],
        counts=counts,
        total_rows=total,
        sources=sorted({str(s) for s in sources}),
        source_datasets_list=source_ids,
        # (pretty name, licence) of each named task the rows come from: "CommonsenseQA: MIT".
        source_licenses=sorted(
            {TASK_DATA_LICENSES[str(s)] for s in _distinct(tables, "source") if str(s) in TASK_DATA_LICENSES}
        ),
        license_text=_license_text(license_),
        generators=_prov_values(tables, "generator"),
        correctors_all=_prov_values(tables, "corrector"),
        corrector_prompts=_prov_values(tables, "corrector_prompt"),
        sampling=_prov_values(tables, "sampling"),
        subjects=sorted(subjects),
        usage=usage,
        samples_md=samples_md,
        recipes=list(summaries),
        summaries={k: v for k, v in summaries.items() if isinstance(v, dict)},
        # Which task families the rows hold: the templates describe CSQA rows in CSQA terms.
        choice_task=choice_task,
        math_task=math_task,
        paper_url=PAPER_URL,
        citation=PAPER_CITATION,
        **ctx,
    )
    text = _scrub_string(str(card), folder)
    _atomic_write_text(folder / README, text if text.endswith("\n") else text + "\n")
