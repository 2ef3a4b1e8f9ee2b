"""How CSQA answers are matched to candidates, under the paper's rule and ours, on the paper's dev file.

    python benchmarks/csqa_mapping.py          # data from $LEMA_DATA_DIR or ../shared/data
    python benchmarks/csqa_mapping.py --ratios 0.2 0.3 0.4 0.5   # also sweep ours' edit-distance bound

For each of the 1,221 dev items, one crafted completion per family (`The answer is <X>.`): the gold
text, the gold's label (`B`, `(B)`, `option B`, `B.`), junk (`???`, `I do not know`, `none of the
above`), the gold with a typo (one / two characters dropped), the gold inside a longer answer, a wrong
candidate, and a candidate of another item (text near none of this item's candidates). Printed per
family and rule: accuracy and how the answers matched (`grading.grade_choice`, the evaluate path).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections import Counter
from pathlib import Path

from lema_hub import csqa
from lema_hub.grading import grade_choice


def _data_dir() -> Path:
    env = os.environ.get("LEMA_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _drop(text: str, k: int, rng: random.Random) -> str:
    """`text` with k letters dropped (not the first), as a typo would."""
    chars = list(text)
    letters = [i for i, ch in enumerate(chars) if ch.isalpha() and i > 0]
    for i in sorted(rng.sample(letters, min(k, len(letters))), reverse=True):
        del chars[i]
    return "".join(chars)


def families(items: list[csqa.CsqaItem], seed: int = 0) -> dict[str, list[str]]:
    """Family -> one stated answer per item."""
    rng = random.Random(seed)
    gold_label = [csqa.candidate_label(it.candidates.index(it.answer)) for it in items]
    out: dict[str, list[str]] = {
        "gold text": [it.answer for it in items],
        "gold label B": gold_label,
        "gold label (B)": [f"({x})" for x in gold_label],
        "gold label option B": [f"option {x}" for x in gold_label],
        "gold label B.": [f"{x}." for x in gold_label],
        "???": ["???"] * len(items),
        "I do not know": ["I do not know"] * len(items),
        "none of the above": ["none of the above"] * len(items),
        "gold, 1 letter dropped": [_drop(it.answer, 1, rng) for it in items],
        "gold, 2 letters dropped": [_drop(it.answer, 2, rng) for it in items],
        "gold in a sentence": [f"definitely the {it.answer} here" for it in items],
        "a wrong candidate": [next(c for c in it.candidates if c != it.answer) for it in items],
    }
    foreign = []
    for i, it in enumerate(items):
        other = items[(i + 1 + rng.randrange(len(items) - 1)) % len(items)]
        own = {csqa._choice_key(c) for c in it.candidates}
        pool = [c for c in other.candidates if csqa._choice_key(c) not in own]
        foreign.append(rng.choice(pool or other.candidates))
    out["another item's candidate"] = foreign
    return out


def measure(items, answers, rule: str) -> tuple[float, Counter]:
    kinds: Counter = Counter()
    correct = 0
    for it, a in zip(items, answers):
        v = grade_choice(f"Reasoning.\nThe answer is {a}.", it.answer, it.candidates, rule)
        kinds[v.mapping or v.verdict] += 1
        correct += v.verdict == "correct"
    return correct / len(items), kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data_dir", type=Path, default=_data_dir())
    ap.add_argument("--ratios", type=float, nargs="*", default=[])
    args = ap.parse_args()
    path = args.data_dir / "lema" / "test_data" / "csqa_dev.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = csqa.paper_items(rows)
    fams = families(items)
    print(f"{len(items)} dev items; ours = lema_hub (MAX_EDIT_RATIO {csqa.MAX_EDIT_RATIO})")
    print("| answer | paper acc | ours acc | ours: how matched |\n|---|---|---|---|")
    for name, answers in fams.items():
        paper, _ = measure(items, answers, "paper")
        ours, kinds = measure(items, answers, "lema_hub")
        how = ", ".join(f"{k} {n}" for k, n in kinds.most_common())
        print(f"| {name} | {100 * paper:.1f} % | {100 * ours:.1f} % | {how} |")
    default = csqa.MAX_EDIT_RATIO
    for r in args.ratios:
        csqa.MAX_EDIT_RATIO = r
        cells = []
        for name in ("gold, 1 letter dropped", "gold, 2 letters dropped", "another item's candidate"):
            acc, kinds = measure(items, fams[name], "lema_hub")
            cells.append(f"{name}: acc {100 * acc:.1f} %, no_match {kinds['no_match']}")
        print(f"ratio {r}: " + "; ".join(cells))
    csqa.MAX_EDIT_RATIO = default


if __name__ == "__main__":
    main()
