"""Benchmark the corrector's output parser (`lema_hub.corrector.parse.parse_correction`) on adversarial outputs.

Each input family is built at several sizes and parsed with the deployed cap (`MAX_CORRECTION_CHARS`:
longer outputs are rejected as `too_long` at once) and with the cap lifted, which shows how the parser
itself scales (linear: x4 size -> ~x4 time). `--compare_rev` also times the parser of an older commit
(loaded from git), where whitespace made it quadratic.

    python benchmarks/parser.py
    python benchmarks/parser.py --sizes 16000 64000 1000000 --compare_rev b4f17a8 --compare_max 16000
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lema_hub.corrector import parse  # noqa: E402

GOOD = (
    " Step 2.\nExplanation: 48 / 2 halves the muffins; twice means times 2.\nCorrect Solution:\n{\n...\n"
    "Step 2: It sold 48 * 2 = 96 cookies.\nStep 3: The answer is 96.\n}"
)
HEAD = " Step 2.\nExplanation: a\nCorrect Solution:\n{\nStep 2: "


def _pad(ws: str) -> Callable[[int], str]:
    def build(n: int) -> str:
        per = max(1, (n - len(GOOD)) // (len(ws) * GOOD.count("\n")))
        return GOOD.replace("\n", "\n" + ws * per)

    return build


FAMILIES: dict[str, Callable[[int], str]] = {
    "newlines": lambda n: "x" + "\n" * n + "x",
    "Step + newlines": lambda n: "Step" + "\n" * n,
    "Explanation + newlines": lambda n: " Step 2.\nExplanation: a\n" + "\n" * n,
    "tabs": lambda n: "\t" * n + "x",
    "correction, newlines after each line": _pad("\n"),
    "correction, spaces after each line": _pad(" "),
    "continuation lines": lambda n: HEAD + "The answer is 5.\n" + "a\n" * (n // 2),
    "step lines": lambda n: HEAD + "The answer is 5.\n" + "Step 3: x\n" * (n // 10),
    "open braces": lambda n: HEAD.replace("{\n", "{ " * (n // 2) + "\n") + "The answer is 5.",
    "closing braces": lambda n: HEAD + "The answer is 5." + "}" * n,
    "step number digits": lambda n: " Step " + "9" * n + ".",
    # The corrected answer is read by grading.extract_answer: its cost, not the parser's (issue 21.3).
    "unclosed \\boxed{ (grading)": lambda n: HEAD + "\\boxed{" * (n // 7),
}


def _best_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def _old_parser(rev: str):
    """`parse_correction` of `lema_hub/correction.py` at git revision `rev` (imports today's package)."""
    src = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:lema_hub/correction.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_correction.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_correction", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_correction"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.parse_correction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cap = parse.MAX_CORRECTION_CHARS
    ap.add_argument("--sizes", type=int, nargs="+", default=[16_000, cap - 100, 64_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=5, help="best of N calls")
    ap.add_argument("--compare_rev", default=None, help="also time the parser of this git revision")
    ap.add_argument("--compare_max", type=int, default=16_000, help="largest size for --compare_rev")
    ap.add_argument("--skip_boxed", action="store_true", help="skip the \\boxed{ family (grading's cost)")
    args = ap.parse_args()

    old = _old_parser(args.compare_rev) if args.compare_rev else None
    print(f"MAX_CORRECTION_CHARS = {cap:,}; best of {args.repeat} calls, ms per call\n")
    head = "| input | size (chars) | deployed (ms) | reason | cap lifted (ms) |"
    sep = "|---|---:|---:|---|---:|"
    if old:
        head += f" `{args.compare_rev}` (ms) |"
        sep += "---:|"
    print(head)
    print(sep)
    for name, build in FAMILIES.items():
        if args.skip_boxed and "boxed" in name:
            continue
        for n in args.sizes:
            raw = build(n)
            repeat = 1 if "boxed" in name else args.repeat
            deployed = _best_ms(lambda raw=raw: parse.parse_correction(raw, 3), repeat)
            reason = parse.parse_correction(raw, 3).reject_reason or "accepted format"
            parse.MAX_CORRECTION_CHARS = 10**12
            try:
                lifted = (
                    _best_ms(lambda raw=raw: parse.parse_correction(raw, 3), repeat)
                    if not ("boxed" in name and len(raw) > 2 * cap)
                    else float("nan")  # quadratic in grading: minutes at 1 MB
                )
            finally:
                parse.MAX_CORRECTION_CHARS = cap
            row = f"| {name} | {len(raw):,} | {deployed:.2f} | {reason} | {lifted:.2f} |"
            if old:
                if n <= args.compare_max:
                    row += f" {_best_ms(lambda raw=raw: old(raw, 3), 1):.1f} |"
                else:
                    row += " - |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
