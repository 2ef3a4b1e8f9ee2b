"""pass@1 with confidence intervals, and the Markdown tables of evaluation results."""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 % and 100 %)."""
    if total <= 0:
        return (0.0, 0.0)
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, {total}], got {successes}.")
    z = _z(confidence)
    p = successes / total
    denom = 1 + z * z / total
    center = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # At 0 % / 100 % the bound is exactly 0 / 1 (floating point would leave ~1e-17).
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == total else min(1.0, center + half)
    return (low, high)


def bootstrap_interval(
    scores: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem scores (for pass@1 from n samples)."""
    import numpy as np

    if len(scores) == 0:
        return (0.0, 0.0)
    arr = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n_resamples, len(arr)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def pass_at_k(n: int, c: int, k: int = 1) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021); pass@1 = c / n."""
    if n <= 0 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k}).")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def accuracy_with_interval(scores: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean score with a 95 % interval: Wilson when every score is 0/1, else bootstrap. Fractions."""
    n = len(scores)
    acc = sum(scores) / n if n else 0.0
    if all(s in (0, 1) for s in scores):
        low, high = wilson_interval(int(sum(scores)), n, confidence)
        method = "wilson"
    else:
        low, high = bootstrap_interval(scores, confidence)
        method = "bootstrap"
    return {"accuracy": acc, "ci_low": low, "ci_high": high, "ci_method": method, "n": n}


def summarize_rows(rows: Sequence[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """Metrics of one (model, benchmark) from its details rows (one row per sample).

    Accuracy is the mean over problems of pass@1 estimated from that problem's samples; the invalid rate
    is the share of samples with no extractable answer. Breakdowns by level and subject when present.
    """
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem_id"]].append(r)
    scores = {
        pid: pass_at_k(len(rs), sum(r["verdict"] == "correct" for r in rs), 1)
        for pid, rs in by_problem.items()
    }
    out = accuracy_with_interval(list(scores.values()), confidence)
    out["num_problems"] = out.pop("n")
    out["num_samples"] = len(rows)
    out["samples_per_problem"] = len(rows) / len(by_problem) if by_problem else 0
    out["invalid_rate"] = sum(r["predicted_answer"] is None for r in rows) / len(rows) if rows else 0.0
    out["error_count"] = sum(bool(r.get("error")) for r in rows)
    out["truncated_rate"] = sum(r.get("finish_reason") == "length" for r in rows) / len(rows) if rows else 0.0
    tokens = [r["completion_tokens"] for r in rows if r.get("completion_tokens") is not None]
    out["mean_output_tokens"] = sum(tokens) / len(tokens) if tokens else None
    for key in ("level", "subject"):
        groups: dict[str, list[float]] = defaultdict(list)
        for pid, rs in by_problem.items():
            value = rs[0].get(key)
            if value is not None:
                groups[str(value)].append(scores[pid])
        if groups:
            out[f"by_{key}"] = {
                g: {k: v for k, v in accuracy_with_interval(s, confidence).items() if k != "ci_method"}
                for g, s in sorted(groups.items(), key=lambda kv: _natural_key(kv[0]))
            }
    return out


def _natural_key(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown tables across models, one per benchmark, from `results.json`-style entries."""
    by_bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in results.values():
        by_bench[entry["benchmark"]].append(entry)
    parts = []
    for bench, entries in sorted(by_bench.items()):
        proto = entries[0]["protocol"]
        parts.append(f"### {bench} ({entries[0]['num_problems']} problems, {proto['decoding']})\n")
        parts.append(
            "| Model | pass@1 (%) | 95% CI | Invalid (%) | Truncated (%) | Mean output tokens | Prompt |"
        )
        parts.append("|---|---:|---:|---:|---:|---:|---|")
        for e in sorted(entries, key=lambda e: -e["accuracy"]):
            tok = "–" if e["mean_output_tokens"] is None else f"{e['mean_output_tokens']:.0f}"
            parts.append(
                f"| {e['model_label']} | {_pct(e['accuracy'])} | {_pct(e['ci_low'])}–{_pct(e['ci_high'])} "
                f"| {_pct(e['invalid_rate'])} | {_pct(e['truncated_rate'])} | {tok} | {_prompt_cell(e['protocol'])} |"
            )
        for key in ("level", "subject"):
            models_with = [e for e in entries if e.get(f"by_{key}")]
            if not models_with:
                continue
            groups = sorted({g for e in models_with for g in e[f"by_{key}"]}, key=_natural_key)
            parts.append(f"\npass@1 (%) by {key}:\n")
            parts.append("| Model | " + " | ".join(groups) + " |")
            parts.append("|---|" + "---:|" * len(groups))
            for e in models_with:
                cells = [_pct(e[f"by_{key}"][g]["accuracy"]) if g in e[f"by_{key}"] else "–" for g in groups]
                parts.append(f"| {e['model_label']} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts).strip() + "\n"


def _prompt_cell(protocol: dict[str, Any]) -> str:
    template = protocol.get("prompt")
    style = protocol["prompt_style"] or "predictions file"  # a file's completions: style not known
    return style if template in (None, "lema-cot") else f"{template}, {style}"


def model_card_table(entries: Sequence[dict[str, Any]]) -> str:
    """The results table written into a model's card."""
    lines = [
        "| Benchmark | pass@1 (%) | 95% CI | Invalid (%) | Problems | Protocol |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['benchmark']} | {_pct(e['accuracy'])} | {_pct(e['ci_low'])}–{_pct(e['ci_high'])} "
            f"| {_pct(e['invalid_rate'])} | {e['num_problems']} | {protocol_notes(e['protocol'])} |"
        )
    return "\n".join(lines) + "\n"


def protocol_notes(protocol: dict[str, Any]) -> str:
    n = protocol["num_samples"]
    est = "" if n in (1, None) else f", pass@1 from {n} samples"  # None: a predictions file's rows
    if protocol.get("answer_rounding") is not None:
        est += f", numbers compared after rounding to {protocol['answer_rounding']} decimals"
    template = protocol.get("prompt")
    prompt = "" if template in (None, "lema-cot") else f"{template} template, "
    if protocol.get("backend") == "predictions-file":  # nothing was generated: say what was done
        stop = protocol.get("stop")
        cut = f", cut at the stop strings {stop!r}" if stop else ""
        style = f", {protocol['prompt_style']} prompt" if protocol.get("prompt_style") else ""
        return f"zero-shot CoT ({prompt}completions from a predictions file{style}{cut}){est}"
    return (
        f"zero-shot CoT ({prompt}{protocol['prompt_style']} prompt), {protocol['decoding']}, "
        f"max {protocol['max_new_tokens']} new tokens{est}"
    )
