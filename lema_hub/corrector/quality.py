"""What a `lema-hub bench-corrector` run says of a corrector: both protocols' metrics (as ProcessBench's own
evaluation code computes them) and the headline numbers `correct` puts on a corrections card."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from lema_hub.models import is_hub_id
from lema_hub.schema import TASKS

RECIPE = "bench-corrector"
PROTOCOLS = ("lema", "processbench")
PROCESSBENCH_SPLITS = TASKS["processbench"].splits


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _mean(xs: list[bool]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def lema_metrics(rows: list[dict]) -> dict[str, Any]:
    """LeMa protocol on erroneous items: exact and within-one first-error accuracy, deltas, parse failures."""
    err = [r for r in rows if r["labelled_step"] is not None]
    deltas = Counter(r["delta"] for r in err if r["delta"] is not None)
    return {
        "n": len(err),
        "exact": _mean([r["correct"] for r in err]),
        "within_one": _mean([r["delta"] is not None and abs(r["delta"]) <= 1 for r in err]),
        "parse_failure_rate": _mean([r["prediction"] in ("parse_failure", "generation_failed") for r in err]),
        "no_error_rate": _mean([r["prediction"] == "no_error" for r in err]),
        "delta_distribution": {str(d): deltas[d] for d in sorted(deltas)},
        "parse_failures": dict(
            Counter(
                r["parse_reason"] for r in err if r["prediction"] in ("parse_failure", "generation_failed")
            )
        ),
    }


def processbench_metrics(rows: list[dict]) -> dict[str, Any]:
    """ProcessBench protocol: accuracy on erroneous items, on correct items, and their harmonic mean."""
    err = [r["correct"] for r in rows if r["labelled_step"] is not None]
    ok = [r["correct"] for r in rows if r["labelled_step"] is None]
    e, c = _mean(err), _mean(ok)
    f1 = (
        round(2 * e * c / (e + c), 4)
        if e is not None and c is not None and e + c > 0
        else (0.0 if e is not None and c is not None else None)
    )
    return {
        "n": len(rows),
        "n_error": len(err),
        "n_correct": len(ok),
        "error_acc": e,
        "correct_acc": c,
        "f1": f1,
        "parse_failure_rate": _mean(
            [r["prediction"] in ("parse_failure", "generation_failed") for r in rows]
        ),
        "parse_failures": dict(
            Counter(
                r["parse_reason"] for r in rows if r["prediction"] in ("parse_failure", "generation_failed")
            )
        ),
    }


def metrics(rows: list[dict]) -> dict[str, Any]:
    """{protocol: {split: metrics, ...}} (+ `all` for lema, `average_f1` for processbench)."""
    out: dict[str, Any] = {}
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by[(r["protocol"], r["split"])].append(r)
    for protocol in PROTOCOLS:
        splits = sorted({s for p, s in by if p == protocol}, key=_split_order)
        if not splits:
            continue
        fn = lema_metrics if protocol == "lema" else processbench_metrics
        out[protocol] = {s: fn(by[(protocol, s)]) for s in splits}
        if protocol == "lema":
            out[protocol]["all"] = fn([r for s in splits for r in by[(protocol, s)]])
        else:
            f1s = [out[protocol][s]["f1"] for s in splits if out[protocol][s]["f1"] is not None]
            out[protocol]["average_f1"] = round(sum(f1s) / len(f1s), 4) if f1s else None
    return out


def _split_order(name: str) -> tuple[int, str]:
    return (
        PROCESSBENCH_SPLITS.index(name) if name in PROCESSBENCH_SPLITS else len(PROCESSBENCH_SPLITS),
        name,
    )


def accuracy_by_position(rows: list[dict], cap: int = 10) -> dict[str, dict[str, float | int]]:
    """Per protocol: exact accuracy on erroneous items by the labelled step (steps >= `cap` pooled)."""
    out: dict[str, dict[str, Any]] = {}
    for protocol in PROTOCOLS:
        groups: dict[int, list[bool]] = defaultdict(list)
        for r in rows:
            if r["protocol"] == protocol and r["labelled_step"] is not None:
                groups[min(r["labelled_step"], cap)].append(bool(r["correct"]))
        if groups:
            out[protocol] = {
                (f"{k}+" if k == cap else str(k)): {"n": len(v), "acc": round(sum(v) / len(v), 4)}
                for k, v in sorted(groups.items())
            }
    return out


# --------------------------------------------------------------------------------------------------
# Headline numbers (for the corrections card) and the card's statistics
# --------------------------------------------------------------------------------------------------


def headline(folder_or_repo: str) -> dict[str, Any]:
    """The benchmark's headline numbers from its `run_summary.json` (a folder, or a Hub dataset repo)."""
    path = Path(folder_or_repo)
    if path.is_dir():
        summary_file = path / "run_summary.json"
    elif not is_hub_id(folder_or_repo):
        raise ValueError(f"corrector_benchmark {folder_or_repo!r} is neither a folder nor a Hub dataset id.")
    else:
        from huggingface_hub import hf_hub_download

        try:
            summary_file = Path(hf_hub_download(folder_or_repo, "run_summary.json", repo_type="dataset"))
        except Exception as exc:  # noqa: BLE001 - offline, missing repo, no such file: one clear line
            raise ValueError(
                f"corrector_benchmark {folder_or_repo!r}: no such folder, and the Hub dataset could not "
                f"be read ({type(exc).__name__})."
            ) from None
    try:
        summary = json.loads(summary_file.read_text())[RECIPE]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"corrector_benchmark {folder_or_repo!r} is not a `lema-hub bench-corrector` output "
            "(no bench-corrector entry in its run_summary.json)."
        ) from None
    lema, pb = summary.get("lema", {}), summary.get("processbench", {})
    splits = [s for s in summary.get("splits", {}) if s in lema or s in pb]
    table = []
    for s in splits:
        lm, pm = lema.get(s, {}), pb.get(s, {})
        table.append(
            {
                "split": s,
                "lema_exact": lm.get("exact"),
                "lema_within_one": lm.get("within_one"),
                "lema_parse_failure_rate": lm.get("parse_failure_rate"),
                "error_acc": pm.get("error_acc"),
                "correct_acc": pm.get("correct_acc"),
                "f1": pm.get("f1"),
            }
        )
    return {
        "source": folder_or_repo,
        "data": summary.get("data"),
        "corrector": summary.get("corrector"),
        "corrector_prompt": summary.get("corrector_prompt"),
        "splits": table,
        "lema_exact": lema.get("all", {}).get("exact"),
        "average_f1": pb.get("average_f1"),
    }
