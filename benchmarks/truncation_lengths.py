"""How many training rows each length choice cuts: the paper's separate source/target budgets
(QLoRA `source_max_len` / `target_max_len`: GSM8K 512 + 512, MATH 768 + 768) vs one total `max_length`.

GSM8K: the `lema` view built from the real GSM8K train file: 7,473 gold CoT rows plus one correction
row per problem (an error planted in a computed step, corrected by the rule-based reference corrector,
in the paper's correction format). MATH train is not available offline: its CoT rows come from the MATH
*test* solutions as a length proxy. Token counts include the BOS the tokenizer adds to a prompt and the
EOS after a completion.

    python benchmarks/truncation_lengths.py                                  # SmolLM2 tokenizer, offline
    python benchmarks/truncation_lengths.py --tokenizer meta-llama/Llama-2-7b-hf   # the paper's tokenizer
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from locator_qa import perturb  # noqa: E402

from lema_hub import formats  # noqa: E402
from lema_hub.build import correction_completion, gold_cot_rows  # noqa: E402
from lema_hub.corrector.reference import reference_correction  # noqa: E402
from lema_hub.problems import ProblemArgs, load_problems  # noqa: E402
from lema_hub.schema import EMBEDDED_MODEL  # noqa: E402

DEFAULT = Path(os.environ.get("LEMA_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def gsm8k_rows(path: Path, seed: int = 0) -> tuple[list[tuple[str, str]], int]:
    problems = load_problems(ProblemArgs(problems="gsm8k", problems_path=str(path)))
    rows = [(r["prompt"], r["completion"]) for r in gold_cot_rows(problems, "plain")]
    n_cot = len(rows)
    rng = random.Random(seed)
    for p in problems:
        made = perturb(p, rng)
        if made is None:
            continue
        fix = reference_correction(p.to_dict(), made[0])
        if fix is None:
            continue
        row = {
            "question": p.question,
            "steps": made[0],
            "incorrect_step": fix.incorrect_step,
            "explanation": fix.explanation,
            "corrected_steps": fix.corrected_steps,
        }
        rows.append(correction_completion(row))
    return rows, n_cot


def math_rows(path: Path) -> list[tuple[str, str]]:
    problems = load_problems(ProblemArgs(problems="math", problems_path=str(path), problems_split="test"))
    return [(r["prompt"], r["completion"]) for r in gold_cot_rows(problems, "plain")]


def measure(rows: list[tuple[str, str]], tok, budget: int) -> dict:
    lengths = []
    for prompt, completion in rows:
        p = len(tok(prompt, add_special_tokens=True)["input_ids"])
        c = len(tok(completion, add_special_tokens=False)["input_ids"]) + 1  # EOS
        lengths.append((p, c))
    ps = sorted(p for p, _ in lengths)
    cs = sorted(c for _, c in lengths)
    ts = sorted(p + c for p, c in lengths)
    n = len(lengths)
    return {
        "rows": n,
        "prompt_tokens_max": ps[-1],
        "completion_tokens_max": cs[-1],
        "total_tokens_p99": ts[int(0.99 * (n - 1))],
        "total_tokens_max": ts[-1],
        f"cut_by_separate_{budget}+{budget}": sum(p > budget or c > budget for p, c in lengths),
        f"cut_by_total_{budget}": sum(p + c > budget for p, c in lengths),
        f"cut_by_total_{2 * budget}": sum(p + c > 2 * budget for p, c in lengths),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=EMBEDDED_MODEL)
    ap.add_argument("--data", default=str(DEFAULT))
    args = ap.parse_args()
    from lema_hub.models import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    data = Path(args.data)
    gsm8k, n_cot = gsm8k_rows(data / "gsm8k" / "train.jsonl")
    out = {
        "tokenizer": args.tokenizer,
        "gsm8k_lema_view": {
            "cot_rows": n_cot,
            "correction_rows": len(gsm8k) - n_cot,
            **measure(gsm8k, tok, 512),
        },
        "gsm8k_cot_only": measure(gsm8k[:n_cot], tok, 512),
        "gsm8k_corrections_only": measure(gsm8k[n_cot:], tok, 512),
        "math_test_cot_proxy": measure(math_rows(data / "math" / "test.jsonl"), tok, 768),
    }
    assert formats.COT_PROMPT  # the rows are in the paper's formats (lema_hub.formats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
