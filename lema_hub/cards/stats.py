"""Per-kind card statistics (and their plots), token usage and estimated cost."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lema_hub.cards.plots import (
    _plot,
    acceptance_plot,
    accuracy_plot,
    incorrect_step_position_plot,
    rows_by_kind_plot,
    verdicts_by_generator_plot,
    wrong_path_steps_plot,
)
from lema_hub.corrector.quality import accuracy_by_position, metrics
from lema_hub.grading import VERDICTS
from lema_hub.schema import CORRECTOR_TOKENS, REFERENCE_CORRECTOR, TokenColumns


def _column(table: Any, name: str) -> list[Any]:
    return table.column(name).to_pylist() if name in table.column_names else []


def _iter_column(table: Any, name: str, chunk: int = 4096) -> Iterator[Any]:
    """The values of a column, converted to Python `chunk` rows at a time (not the whole column)."""
    if name not in table.column_names:
        return
    for part in table.column(name).chunks:
        for lo in range(0, len(part), chunk):
            yield from part.slice(lo, chunk).to_pylist()


def _lengths(table: Any, name: str) -> list[int | None]:
    """The length of each row's list in a list column (its items are never converted to Python)."""
    import pyarrow.compute as pc

    return pc.list_value_length(table.column(name)).to_pylist() if name in table.column_names else []


def _is_messages(table: Any, name: str) -> bool:
    """Whether a column holds conversational messages (a list), from its Arrow type alone."""
    import pyarrow as pa

    return name in table.column_names and pa.types.is_list(table.schema.field(name).type)


def _all_values(tables: dict[str, dict[str, Any]], name: str, configs: list[str] | None = None) -> list[Any]:
    vals: list[Any] = []
    for config, splits in tables.items():
        if configs is None or config in configs:
            for t in splits.values():
                vals += _column(t, name)
    return vals


def _distinct_values(tables: dict[str, dict[str, Any]], name: str) -> set[Any]:
    """The distinct values of a column over every config (Arrow finds them: only those become
    Python objects, not a list of every row's value)."""
    import pyarrow.compute as pc

    found: set[Any] = set()
    for splits in tables.values():
        for t in splits.values():
            if name in t.column_names:
                found.update(pc.unique(t.column(name)).to_pylist())
    return found


def _value_counts(tables: dict[str, dict[str, Any]], name: str, configs: list[str]) -> Counter:
    """`Counter(_all_values(tables, name, configs))`, counted by Arrow."""
    import pyarrow.compute as pc

    counts: Counter = Counter()
    for config in configs:
        for t in tables.get(config, {}).values():
            if name in t.column_names:
                for item in pc.value_counts(t.column(name)).to_pylist():
                    counts[item["values"]] += item["counts"]
    return counts


def _counter_rows(values: list[Any], total: int | None = None) -> list[dict[str, Any]]:
    counts = Counter(v for v in values if v not in (None, ""))
    total = total or sum(counts.values()) or 1
    return [{"name": str(k), "count": c, "share": f"{100 * c / total:.1f}%"} for k, c in counts.most_common()]


def _fmt_num(x: float | int | None) -> str:
    if x is None:
        return "unknown"
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


def _is_local_model(name: str) -> bool:
    if name == REFERENCE_CORRECTOR:
        return True
    return (
        name.startswith(("embedded:", "tiny:"))
        or Path(name).expanduser().exists()
        or name.startswith(("/", "."))
    )


def _token_usage(
    tables: dict[str, dict[str, Any]],
    cols: TokenColumns,
    configs: list[str],
    prices: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    """Per model (`cols.model`): rows, prompt/completion tokens and estimated cost ("unknown" without a price)."""
    usage: dict[str, dict[str, Any]] = {}
    for config in configs:
        for t in tables.get(config, {}).values():
            models = _column(t, cols.model)
            pt, ct = _column(t, cols.prompt), _column(t, cols.completion)
            if not models or not pt or not ct:
                continue
            for m, p, c in zip(models, pt, ct):
                u = usage.setdefault(
                    str(m),
                    {
                        "model": str(m),
                        "rows": 0,
                        "prompt_tokens": 0,
                        "completion_tokens": 0,
                        "complete": True,
                    },
                )
                u["rows"] += 1
                if p is None or c is None:
                    u["complete"] = False
                else:
                    u["prompt_tokens"] += int(p)
                    u["completion_tokens"] += int(c)
    out = []
    for u in usage.values():
        price = prices.get(u["model"])
        if u["model"] == REFERENCE_CORRECTOR:
            cost = "$0 (rule-based, no model)"
        elif _is_local_model(u["model"]):
            cost = "$0 (local model, no API cost)"
        elif price and u["complete"]:
            dollars = (
                u["prompt_tokens"] * price.get("input", 0) + u["completion_tokens"] * price.get("output", 0)
            ) / 1e6
            cost = (
                f"${dollars:,.2f} (at ${price.get('input', 0)}/${price.get('output', 0)} per M in/out tokens)"
            )
        else:
            cost = "unknown"
        tokens = "complete" if u["complete"] else "partial (some rows report none)"
        if u["model"] == REFERENCE_CORRECTOR:
            tokens = "none (rule-based)"
        out.append({**u, "cost": cost, "tokens": tokens})
    return out


def _price_table(
    configs: dict[str, Any], prices: dict[str, dict[str, float]] | None
) -> dict[str, dict[str, float]]:
    """User prices ($ per million tokens, {"model": {"input": x, "output": y}}) from the call or a recipe config."""
    table: dict[str, dict[str, float]] = {}
    for cfg in configs.values():
        if isinstance(cfg, dict) and isinstance(cfg.get("price_table"), dict):
            table.update(cfg["price_table"])
    table.update(prices or {})
    return table


def _stats_mistakes(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    samples = [c for c in tables if c.endswith("-samples")]
    verdicts = _all_values(tables, "verdict", samples)
    ctx["verdicts"] = _counter_rows(verdicts)
    # Every verdict with its count, and whether the main (mistakes) configs hold it.
    meaning = {
        "correct": "the answer equals the gold",
        "wrong": "an answer that differs from the gold",
        "no_answer": "no final answer in the path",
        "truncated": "cut at `max_tokens` and not correct",
        "ungradeable": "the gold answer could not be read",
    }
    counts = Counter(v for v in verdicts if v)
    kept = set(_all_values(tables, "verdict", main)) or {"wrong"}
    ctx["verdict_breakdown"] = [
        {
            "verdict": v,
            "count": counts[v],
            "share": f"{100 * counts[v] / max(1, sum(counts.values())):.1f}%",
            "meaning": meaning.get(v, ""),
            "kept": "yes" if v in kept else "no",
        }
        for v in (*VERDICTS, *sorted(set(counts) - set(VERDICTS)))
        if counts[v]
    ]
    aside = {v: counts[v] for v in ("no_answer", "truncated", "ungradeable") if counts[v] and v not in kept}
    ctx["set_aside"] = ", ".join(f"{n:,} {v}" for v, n in aside.items())
    per_gen: dict[str, Counter] = {}
    for cfg in samples:
        for t in tables[cfg].values():
            for g, v in zip(_column(t, "generator"), _column(t, "verdict")):
                per_gen.setdefault(str(g), Counter())[v] += 1
    ctx["generator_accuracy"] = [
        {
            "generator": g,
            "paths": sum(c.values()),
            "correct": c["correct"],
            "wrong": c["wrong"],
            "ungradeable": c["ungradeable"],
            "accuracy": f"{100 * c['correct'] / max(1, sum(c.values())):.1f}%",
        }
        for g, c in sorted(per_gen.items())
    ]
    ids = _all_values(tables, "problem_id", samples)
    wrong_ids = _all_values(tables, "problem_id", main)
    ctx["num_problems"] = len(set(ids)) if ids else None
    ctx["problems_with_mistake"] = len(set(wrong_ids))
    steps = [n for c in main for t in tables[c].values() for n in _lengths(t, "steps") if n is not None]
    ctx["mean_steps"] = f"{sum(steps) / len(steps):.1f}" if steps else None
    if per_gen:
        ctx["images"].append(
            ("Verdicts of the sampled paths, per generator", verdicts_by_generator_plot(folder, per_gen))
        )
    if steps:
        ctx["images"].append(("Length of the wrong paths", wrong_path_steps_plot(folder, steps)))


def _stats_corrections(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    rejected = [c for c in tables if c.endswith("-rejected")]
    n_acc = sum(t.num_rows for c in main for t in tables[c].values())
    n_rej = sum(t.num_rows for c in rejected for t in tables[c].values())
    ctx["accepted"], ctx["rejected"] = n_acc, n_rej
    ctx["acceptance_rate"] = f"{100 * n_acc / (n_acc + n_rej):.1f}%" if n_acc + n_rej else "unknown"
    ctx["reject_reasons"] = _counter_rows(_all_values(tables, "reject_reason", rejected))
    correctors = sorted({str(c) for c in _all_values(tables, "corrector") if c})
    ctx["reference_corrector"] = REFERENCE_CORRECTOR in correctors
    ctx["corrector_token_columns"] = [CORRECTOR_TOKENS.prompt, CORRECTOR_TOKENS.completion]
    # Task configs: a main config is not written when nothing was accepted, so read `-rejected` too.
    tasks = sorted({*main, *(c.removesuffix("-rejected") for c in rejected)})
    ctx["tasks"] = tasks
    ctx["correctors"] = [
        {
            "name": c,
            "label": "rule-based reference corrector (no LLM; recomputes the gold solution's steps)"
            if c == REFERENCE_CORRECTOR
            else "LLM corrector",
        }
        for c in correctors
    ]
    # Acceptance per corrector (and per task config).
    per: list[dict[str, Any]] = []
    for cfg in tasks:
        task = cfg
        rej_cfg = f"{cfg}-rejected"
        acc_c = Counter(_all_values(tables, "corrector", [cfg]))
        rej_c = Counter(_all_values(tables, "corrector", [rej_cfg]))
        for corr in sorted(set(acc_c) | set(rej_c), key=str):
            a, r = acc_c[corr], rej_c[corr]
            per.append(
                {
                    "task": task,
                    "corrector": corr,
                    "accepted": a,
                    "rejected": r,
                    "rate": f"{100 * a / (a + r):.1f}%" if a + r else "n/a",
                }
            )
    ctx["acceptance_table"] = per
    # Where the corrector located the first incorrect step (relative position in the wrong path).
    positions, agree, both = [], 0, 0
    for cfg in main:
        for t in tables[cfg].values():
            for k, n_steps, ref in zip(
                _column(t, "incorrect_step"),
                _lengths(t, "steps"),
                _column(t, "reference_step") or [None] * t.num_rows,
            ):
                if k is not None and n_steps:
                    positions.append(min(1.0, max(0.0, (k - 1) / max(1, n_steps))))
                if k is not None and ref is not None:
                    both += 1
                    agree += int(k == ref)
    ctx["step_agreement"] = f"{agree}/{both} ({100 * agree / both:.1f}%)" if both else None
    if positions:
        ctx["images"].append(
            (
                "Where the first incorrect step sits in a wrong path",
                incorrect_step_position_plot(folder, positions),
            )
        )
    # Acceptance by level (MATH) when levels exist, else by task config.
    by: dict[str, list[int]] = {}
    for cfgs, accepted in [(main, 1), (rejected, 0)]:
        for lvl in _all_values(tables, "level", cfgs):
            if lvl is not None:
                by.setdefault(f"level {lvl}", [0, 0])[1 - accepted] += 1
    label = "level"
    if not by:
        label = "task"
        for cfg in tasks:
            by[cfg] = [
                sum(t.num_rows for t in tables.get(cfg, {}).values()),
                sum(t.num_rows for t in tables.get(f"{cfg}-rejected", {}).values()),
            ]
    keys = sorted(by)
    rates = [100 * by[k][0] / max(1, sum(by[k])) for k in keys]
    if keys:
        ctx["images"].append((f"Acceptance rate by {label}", acceptance_plot(folder, label, keys, rates)))


def _stats_training_rows(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    table = []
    for cfg, splits in tables.items():
        kinds = _value_counts(tables, "kind", [cfg])
        messages = any(_is_messages(t, "prompt") for t in splits.values() if t.num_rows)
        table.append(
            {
                "config": cfg,
                "rows": sum(t.num_rows for t in splits.values()),
                "cot": kinds.get("cot", 0),
                "correction": kinds.get("correction", 0),
                "format": "conversational (messages)" if messages else "plain text",
            }
        )
    ctx["view_table"] = table
    if table:
        ctx["images"].append(
            ("Training rows per config, CoT vs correction", rows_by_kind_plot(folder, table))
        )


def _results(folder: Path) -> dict[str, Any]:
    """An eval folder's results.json (config -> entry), {} when absent or unreadable."""
    try:
        data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stats_eval(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    acc = []
    for cfg in tables:
        vals = _all_values(tables, "correct", [cfg])
        if not vals:
            vals = [v == "correct" for v in _all_values(tables, "verdict", [cfg])]
        if vals:
            acc.append(
                {"config": cfg, "n": len(vals), "accuracy": 100 * sum(bool(v) for v in vals) / len(vals)}
            )
    ctx["eval_table"] = [dict(a, accuracy=f"{a['accuracy']:.1f}%") for a in acc]
    # Multiple-choice configs (CSQA): how the stated answers were matched to a candidate, and by which rule.
    mapping = []
    rules = {k: (v.get("protocol") or {}).get("choice_mapping") for k, v in _results(folder).items()}
    for cfg in tables:
        flags = [v for v in _all_values(tables, "mapping_needed", [cfg]) if v is not None]
        if flags:
            kinds = Counter(v for v in _all_values(tables, "mapping", [cfg]) if v is not None)
            mapped = sum(bool(v) for v in flags)
            mapping.append(
                {
                    "config": cfg,
                    "rule": rules.get(cfg) or "not recorded",
                    "answered": len(flags),
                    "mapped": mapped,
                    "rate": f"{100 * mapped / len(flags):.1f}%",
                    **{
                        k: kinds.get(k, 0)
                        for k in ("exact", "label", "contains", "edit_distance", "no_match")
                    },
                }
            )
    ctx["choice_mapping"] = mapping
    if acc:
        labels = [a["config"] for a in acc]
        values = [a["accuracy"] for a in acc]
        ctx["images"].append(
            ("Accuracy (pass@1) per model and benchmark", accuracy_plot(folder, labels, values))
        )


def _pct_or_na(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _stats_corrector_bench(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    """`write_dataset_card` statistics for kind `corrector_bench`, computed from the parquet details."""

    rows = []
    for config, splits in tables.items():
        for split, t in splits.items():
            cols = {
                c: _column(t, c)
                for c in ("labelled_step", "prediction", "predicted_step", "correct", "delta", "parse_reason")
            }
            for i in range(t.num_rows):
                rows.append(
                    {c: (v[i] if v else None) for c, v in cols.items()} | {"split": split, "protocol": config}
                )
    scores = metrics(rows)
    table = []
    for s, m in scores.get("processbench", {}).items():
        if s == "average_f1":
            continue
        lm = scores.get("lema", {}).get(s, {})
        table.append(
            {
                "split": s,
                "n": m["n"],
                "lema_exact": _pct_or_na(lm.get("exact")),
                "lema_within_one": _pct_or_na(lm.get("within_one")),
                "lema_parse": _pct_or_na(lm.get("parse_failure_rate")),
                "error_acc": _pct_or_na(m["error_acc"]),
                "correct_acc": _pct_or_na(m["correct_acc"]),
                "f1": _pct_or_na(m["f1"]),
            }
        )
    if not table:  # lema protocol only
        for s, lm in scores.get("lema", {}).items():
            if s != "all":
                table.append(
                    {
                        "split": s,
                        "n": lm["n"],
                        "lema_exact": _pct_or_na(lm["exact"]),
                        "lema_within_one": _pct_or_na(lm["within_one"]),
                        "lema_parse": _pct_or_na(lm["parse_failure_rate"]),
                        "error_acc": "n/a",
                        "correct_acc": "n/a",
                        "f1": "n/a",
                    }
                )
    ctx["bench_table"] = table
    ctx["average_f1"] = _pct_or_na(scores.get("processbench", {}).get("average_f1"))
    lema_all = scores.get("lema", {}).get("all")
    ctx["lema_all"] = (
        {k: _pct_or_na(lema_all[k]) for k in ("exact", "within_one", "parse_failure_rate", "no_error_rate")}
        | {"n": lema_all["n"]}
        if lema_all
        else None
    )
    ctx["delta_distribution"] = lema_all["delta_distribution"] if lema_all else {}
    ctx["parse_failures"] = sorted(Counter(str(r) for r in _all_values(tables, "parse_reason") if r).items())
    ctx["prediction_counts"] = sorted(Counter(str(p) for p in _all_values(tables, "prediction")).items())
    positions = accuracy_by_position(rows)
    if positions:

        def draw(ax):
            for protocol, marker in (("lema", "o"), ("processbench", "s")):
                if protocol in positions:
                    pts = positions[protocol]
                    ax.plot(list(pts), [100 * v["acc"] for v in pts.values()], marker=marker, label=protocol)
            ax.set_title("First-error accuracy by position of the wrong step")
            ax.set_xlabel("labelled first wrong step (1-based)")
            ax.set_ylabel("% exact")
            ax.set_ylim(0, 100)
            ax.legend(frameon=False)

        ctx["images"].append(
            ("Accuracy by position of the wrong step", _plot(folder, "accuracy_by_position", draw))
        )


_KIND_STATS = {
    "mistakes": _stats_mistakes,
    "corrections": _stats_corrections,
    "cot": _stats_training_rows,
    "mixture": _stats_training_rows,
    "evolved": lambda folder, tables, main, ctx: None,
    "eval_details": _stats_eval,
    "corrector_bench": _stats_corrector_bench,
}
