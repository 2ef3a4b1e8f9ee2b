"""Grading throughput: answers/s serially (``grade`` in a loop) and batched (``grade_many`` over a pool).

    python benchmarks/grading.py                 # real data from $LEMA_DATA_DIR or ../shared/data
    python benchmarks/grading.py --workers 4 --math-limit 200

GSM8K: the paper's 1,319 gold completions, each graded against its gold answer and against a
wrong gold (answer + 1). MATH: MATH-500 gold solutions against their answers and against the next
problem's answer. Without the shared data it falls back to the bundled sample and a small MATH set.
Both modes exclude the one-off start of the grading workers (``warmup``). The verdicts of both modes are compared and must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from lema_hub.formats import cot_target, gsm8k_rationale
from lema_hub.grading import grade, grade_many, warmup
from lema_hub.problems import ProblemArgs, load_problems, load_sample

REPO = Path(__file__).resolve().parents[1]


def _data_dir(arg: str | None) -> Path | None:
    for c in (arg, os.environ.get("LEMA_DATA_DIR"), str(REPO.parent / "shared" / "data")):
        if c and Path(c).is_dir():
            return Path(c)
    return None


def gsm8k_set(data: Path | None) -> tuple[list[str], list[str], str]:
    if data is not None:
        paper = [
            json.loads(x) for x in (data / "lema/test_data/gsm8k_test.jsonl").read_text().splitlines() if x
        ]
        probs = load_problems(
            ProblemArgs(problems="gsm8k", problems_path=str(data / "gsm8k/test.jsonl"), problems_split="test")
        )
        preds = [r["completion"] for r in paper]
        name = "paper's GSM8K test completions"
    else:
        probs = load_sample("train") + load_sample("test")
        preds = [cot_target(*gsm8k_rationale(p.gold_solution)) for p in probs]
        name = "bundled sample"
    golds = [p.gold_answer for p in probs] + [str(int(p.gold_answer) + 1) for p in probs]
    return preds + preds, golds, name


def math_set(data: Path | None, limit: int | None) -> tuple[list[str], list[str], str]:
    if data is not None:
        probs = load_problems(
            ProblemArgs(
                problems="math500", problems_path=str(data / "math/math500_test.jsonl"), problems_split="test"
            )
        )
        preds = [p.gold_solution for p in probs]
        answers = [p.gold_answer for p in probs]
        name = "MATH-500 gold solutions"
    else:
        answers = [
            "\\frac{1}{2}",
            "2\\sqrt{3}",
            "(1, 2)",
            "x^2+1",
            "\\{1, 2\\}",
            "\\text{(C)}",
            "0.75",
            "\\pi",
        ] * 8
        preds = [f"So the result is $\\boxed{{{a}}}$." for a in answers]
        name = "synthetic LaTeX answers"
    if limit:
        preds, answers = preds[:limit], answers[:limit]
    wrong = answers[1:] + answers[:1]
    return preds + preds, answers + wrong, name


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--math-limit", type=int, default=None, help="first N MATH-500 problems")
    args = ap.parse_args()
    data = _data_dir(args.data_dir)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, pool workers={args.workers}")
    print(f"{'task':6} {'set':32} {'mode':22} {'answers':>7} {'seconds':>8} {'answers/s':>10}  verdicts")
    for task, (preds, golds, name) in (("gsm8k", gsm8k_set(data)), ("math", math_set(data, args.math_limit))):
        if task == "math":
            warmup()
            warmup(args.workers)
        serial, ts = _time(lambda: [grade(p, g, task) for p, g in zip(preds, golds)])  # noqa: B023
        pooled, tp = _time(lambda: grade_many(preds, golds, task, workers=args.workers))  # noqa: B023
        assert pooled == serial, "grade_many disagrees with serial grade"
        counts: dict[str, int] = {}
        for v in serial:
            counts[v.verdict] = counts.get(v.verdict, 0) + 1
        summary = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
        for mode, secs in (("serial grade()", ts), (f"grade_many(workers={args.workers})", tp)):
            print(
                f"{task:6} {name[:32]:32} {mode:22} {len(preds):7d} {secs:8.2f} {len(preds) / secs:10.1f}  {summary}"
            )
    print("pool verdicts == serial verdicts: yes")


if __name__ == "__main__":
    main()
