"""Benchmark the credential scrubber (`lema_hub.configs.scrub_secrets`) that every engine error,
run record and card goes through.

1. Adversarial inputs (long runs of what each pattern starts on) at doubling sizes: the time per
   doubling stays ~x2 (linear), never x4.
2. Real text: every line of ../shared/data (GSM8K, MATH, SVAMP, ASDiv, ProcessBench steps), in
   texts/s, and how many of them the scrubber changed (should be 0).

    python benchmarks/scrub.py
    python benchmarks/scrub.py --max_kb 2048 --data_dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lema_hub.configs import scrub_secrets  # noqa: E402

ADVERSARIAL = {
    "a-a-a-": "a-",
    "a.a.a.": "a.",
    "http://http://": "http://",
    "?aaaa (no =)": None,  # one '?' then letters
    "api_keyapi_key": "api_key",
    "Bearer Bearer ": "Bearer ",
    "newlines": "\n",
    "mixed-case run": "aB3",
}


def _text(name: str, unit: str | None, size: int) -> str:
    if unit is None:
        return "?" + "a" * (size - 1)
    return (unit * (size // len(unit) + 1))[:size]


def _time(text: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        scrub_secrets(text, ["my-secret-key-123"])
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max_kb", type=int, default=1024)
    parser.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    sizes = []
    kb = 64
    while kb <= args.max_kb:
        sizes.append(kb)
        kb *= 2
    print("| input | " + " | ".join(f"{s} KB" for s in sizes) + " | last doubling |")
    print("|---|" + "---:|" * len(sizes) + "---:|")
    for name, unit in ADVERSARIAL.items():
        times = [_time(_text(name, unit, s * 1024)) for s in sizes]
        ratio = times[-1] / times[-2] if len(times) > 1 and times[-2] > 0 else float("nan")
        print(f"| {name} | " + " | ".join(f"{t * 1000:.1f} ms" for t in times) + f" | x{ratio:.2f} |")

    data = Path(args.data_dir)
    if not data.is_dir():
        print(f"\n{data} is absent: real-text throughput skipped.")
        return
    texts: list[str] = []
    for path in sorted(data.rglob("*.jsonl")):
        texts += path.read_text(encoding="utf-8").splitlines()
    for path in sorted(data.glob("processbench/*.json")):
        texts += [t for row in json.loads(path.read_text()) for t in (row["problem"], *row["steps"])]
    t0 = time.perf_counter()
    changed = sum(scrub_secrets(t) != t for t in texts)
    wall = time.perf_counter() - t0
    chars = sum(map(len, texts))
    print(
        f"\nreal text: {len(texts):,} texts ({chars / 1e6:.1f} M chars) in {wall:.2f} s "
        f"({len(texts) / wall:,.0f} texts/s, {chars / 1e6 / wall:.1f} M chars/s); changed: {changed}"
    )


if __name__ == "__main__":
    main()
