"""Reference-locator QA: perturb one computed result in each gold GSM8K path and check that the
rule-based corrector finds that step and that its correction reaches gold.

    python benchmarks/locator_qa.py                      # ../shared/data/gsm8k/train.jsonl
    python benchmarks/locator_qa.py --path FILE.jsonl --limit 1000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from pathlib import Path

from lema_hub import formats
from lema_hub.calculator import numbers_in
from lema_hub.corrector.parse import parse_correction
from lema_hub.corrector.reference import reference_correction
from lema_hub.grading import grade
from lema_hub.problems import Problem, ProblemArgs, load_problems

DEFAULT = Path(os.environ.get("LEMA_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def perturb(p: Problem, rng: random.Random) -> tuple[list[str], int] | None:
    """A copy of the gold steps with one computed result moved off every number in the problem."""
    steps = formats.gold_steps(p)
    candidates = []
    for j, step in enumerate(steps[:-1]):
        head, eq, tail = step.rpartition("=")
        m = re.search(r"\d[\d,]*(?:\.\d+)?", tail)
        if eq and m:
            candidates.append((j, head, tail, m))
    if not candidates:
        return None
    j, head, tail, m = rng.choice(candidates)
    value = float(m.group(0).replace(",", ""))
    known = set(numbers_in(p.question)) | set(
        numbers_in(p.gold_solution.replace("<<", " ").replace(">>", " "))
    )
    new = next(value + d for d in (7, 13, 29, 101, 1009) if all(abs(value + d - k) > 0.01 for k in known))
    wrong = list(steps)
    wrong[j] = (
        head
        + "="
        + tail[: m.start()]
        + (str(int(new)) if new.is_integer() else f"{new:.2f}")
        + tail[m.end() :]
    )
    return wrong, j + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=str(DEFAULT / "gsm8k" / "train.jsonl"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    problems = load_problems(
        ProblemArgs(problems="gsm8k", problems_path=args.path, problems_limit=args.limit)
    )
    rng = random.Random(args.seed)
    start = time.perf_counter()
    n = applies = found = accepted = 0
    for p in problems:
        made = perturb(p, rng)
        if made is None:
            continue
        wrong, step = made
        n += 1
        fix = reference_correction(p.to_dict(), wrong)
        if fix is None:
            continue
        applies += 1
        found += fix.incorrect_step == step
        parsed = parse_correction(
            formats.correction_target(fix.incorrect_step, fix.explanation, fix.corrected_steps), len(wrong)
        )
        accepted += parsed.ok and grade("\n".join(parsed.corrected_steps), p.gold_answer).verdict == "correct"
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "perturbed_paths": n,
                "locator_applies": applies,
                "step_found": found,
                "step_found_rate": round(found / n, 4),
                "fix_accepted": accepted,
                "fix_accepted_rate": round(accepted / n, 4),
                "seconds": round(seconds, 1),
                "paths_per_s": round(n / seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
