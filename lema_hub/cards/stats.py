"""Per-kind card statistics (and their plots), token usage and estimated cost."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Iterator
from itertools import repeat
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


def _chunks(table: Any, name: str) -> Iterator[Any]:
    """A column's Arrow arrays, a row group at a time (nothing when the column is absent)."""
    if name in table.column_names:
        yield from table.column(name)


def _iter_column(table: Any, name: str) -> Iterator[Any]:
    """The values of a column, converted to Python one chunk at a time (not the whole column)."""
    for part in _chunks(table, name):
        yield from part.to_pylist()


def _column(table: Any, name: str) -> list[Any]:
    """Every value of a column as a Python list (only for the per-row benchmark details)."""
    return list(_iter_column(table, name))


def _lengths(table: Any, name: str) -> Iterator[int | None]:
    """The length of each row's list in a list column (its items are never converted to Python)."""
    import pyarrow.compute as pc

    for part in _chunks(table, name):
        yield from pc.list_value_length(part).to_pylist()


def _is_messages(table: Any, name: str) -> bool:
    """Whether a column holds conversational messages (a list), from its Arrow type alone."""
    import pyarrow as pa

    return name in table.column_names and pa.types.is_list(table.schema.field(name).type)


def _tables_of(tables: dict[str, dict[str, Any]], configs: list[str] | None) -> Iterator[Any]:
    for config, splits in tables.items():
        if configs is None or config in configs:
            yield from splits.values()


def _value_counts(tables: dict[str, dict[str, Any]], name: str, configs: list[str] | None = None) -> Counter:
    """Counter of a column's values (None included) over the configs, keys in order of first appearance."""
    import pyarrow.compute as pc

    counts: Counter = Counter()
    for t in _tables_of(tables, configs):
        for part in _chunks(t, name):
            for vc in pc.value_counts(part).to_pylist():
                counts[vc["values"]] += vc["counts"]
    return counts


def _distinct(tables: dict[str, dict[str, Any]], name: str, configs: list[str] | None = None) -> set[Any]:
    """The set of a column's values (None included) over the configs."""
    import pyarrow.compute as pc

    return {
        v
        for t in _tables_of(tables, configs)
        for part in _chunks(t, name)
        for v in pc.unique(part).to_pylist()
    }


def _count_distinct(tables: dict[str, dict[str, Any]], name: str, configs: list[str] | None = None) -> int:
    """How many distinct values (None included) a column holds over the configs; the distinct values
    are kept as Arrow arrays (ids, one per problem), never as Python objects."""
    import pyarrow as pa
    import pyarrow.compute as pc

    seen: dict[Any, list[Any]] = {}  # by Arrow type: only arrays of one type concatenate
    for t in _tables_of(tables, configs):
        for part in _chunks(t, name):
            arrays = seen.setdefault(part.type, [])
            arrays.append(pc.unique(part))
            if len(arrays) > 64:  # fold the chunks' distinct values into one array now and then
                arrays[:] = [pc.unique(pa.concat_arrays(arrays))]
    distinct = [pc.unique(pa.concat_arrays(arrays)) for arrays in seen.values()]
    if len(distinct) == 1:
        return len(distinct[0])
    return len({v for a in distinct for v in a.to_pylist()})  # splits of different types


def _any_truthy(tables: dict[str, dict[str, Any]], name: str) -> bool:
    """Whether any row holds a truthy value (a non-empty list for a list column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for t in _tables_of(tables, None):
        for part in _chunks(t, name):
            if pa.types.is_list(part.type) or pa.types.is_large_list(part.type):
                if pc.any(pc.greater(pc.list_value_length(part), 0)).as_py():
                    return True
            elif any(part.to_pylist()):
                return True
    return False


def _counter_rows(counts: Counter, total: int | None = None) -> list[dict[str, Any]]:
    counts = Counter({k: c for k, c in counts.items() if k not in (None, "")})
    total = total or sum(counts.values()) or 1
    return [{"name": str(k), "count": c, "share": f"{100 * c / total:.1f}%"} for k, c in counts.most_common()]


def _str_counts(counts: Counter, skip_empty: bool = False) -> Counter:
    """`counts` keyed by each value's str (falsy values left out with `skip_empty`)."""
    out: Counter = Counter()
    for v, c in counts.items():
        if v or not skip_empty:
            out[str(v)] += c
    return out


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
            names = (cols.model, cols.prompt, cols.completion)
            if not t.num_rows or not all(n in t.column_names for n in names):
                continue
            for m, p, c in zip(*(_iter_column(t, n) for n in names)):
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
    verdicts = _value_counts(tables, "verdict", samples)
    ctx["verdicts"] = _counter_rows(verdicts)
    # Every verdict with its count, and whether the main (mistakes) configs hold it.
    meaning = {
        "correct": "the answer equals the gold",
        "wrong": "an answer that differs from the gold",
        "no_answer": "no final answer in the path",
        "truncated": "cut at `max_tokens` and not correct",
        "ungradeable": "the gold answer could not be read",
    }
    counts = Counter({v: n for v, n in verdicts.items() if v})
    kept = _distinct(tables, "verdict", main) or {"wrong"}
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
            for g, v in zip(_iter_column(t, "generator"), _iter_column(t, "verdict")):
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
    ctx["num_problems"] = _count_distinct(tables, "problem_id", samples) or None
    ctx["problems_with_mistake"] = _count_distinct(tables, "problem_id", main)
    # One machine integer per wrong path (the histogram needs them all), not a Python object each.
    steps = array(
        "q", (n for c in main for t in tables[c].values() for n in _lengths(t, "steps") if n is not None)
    )
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
    ctx["reject_reasons"] = _counter_rows(_value_counts(tables, "reject_reason", rejected))
    correctors = sorted({str(c) for c in _distinct(tables, "corrector") if c})
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
        acc_c = _value_counts(tables, "corrector", [cfg])
        rej_c = _value_counts(tables, "corrector", [rej_cfg])
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
    positions, agree, both = array("d"), 0, 0
    for cfg in main:
        for t in tables[cfg].values():
            refs = _iter_column(t, "reference_step") if "reference_step" in t.column_names else repeat(None)
            for k, n_steps, ref in zip(_iter_column(t, "incorrect_step"), _lengths(t, "steps"), refs):
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
        for lvl, n in _value_counts(tables, "level", cfgs).items():
            if lvl is not None:
                by.setdefault(f"level {lvl}", [0, 0])[1 - accepted] += n
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
        vals = _value_counts(tables, "correct", [cfg])
        n, right = sum(vals.values()), sum(c for v, c in vals.items() if v)
        if not n:
            verdicts = _value_counts(tables, "verdict", [cfg])
            n, right = sum(verdicts.values()), verdicts["correct"]
        if n:
            acc.append({"config": cfg, "n": n, "accuracy": 100 * right / n})
    ctx["eval_table"] = [dict(a, accuracy=f"{a['accuracy']:.1f}%") for a in acc]
    # Multiple-choice configs (CSQA): how the stated answers were matched to a candidate, and by which rule.
    mapping = []
    rules = {k: (v.get("protocol") or {}).get("choice_mapping") for k, v in _results(folder).items()}
    for cfg in tables:
        flags = _value_counts(tables, "mapping_needed", [cfg])
        answered = sum(c for v, c in flags.items() if v is not None)
        if answered:
            kinds = _value_counts(tables, "mapping", [cfg])
            mapped = sum(c for v, c in flags.items() if v)
            mapping.append(
                {
                    "config": cfg,
                    "rule": rules.get(cfg) or "not recorded",
                    "answered": answered,
                    "mapped": mapped,
                    "rate": f"{100 * mapped / answered:.1f}%",
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
    ctx["parse_failures"] = sorted(
        _str_counts(_value_counts(tables, "parse_reason"), skip_empty=True).items()
    )
    ctx["prediction_counts"] = sorted(_str_counts(_value_counts(tables, "prediction")).items())
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
