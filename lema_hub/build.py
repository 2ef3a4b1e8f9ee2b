"""Training rows: CoT rows from gold (+ correct sampled paths) and correction rows, in ablation views.

Each row is TRL prompt/completion (plain strings, or one user / one assistant message for
`prompt_style: chat`), so SFT trains on the completion only. One config per view, named
`<task>-<view>`; plain and chat rows go to different folders (one type per column).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lema_hub import formats
from lema_hub.artifacts import HubArgs, load_row_table, load_rows, main_config, save_dataset_config_stream
from lema_hub.errors import InvalidInputError
from lema_hub.formats import corrected_solution
from lema_hub.problems import ProblemArgs, load_problems
from lema_hub.publish import finish
from lema_hub.schema import PROMPT_STYLES, training_row_features

logger = logging.getLogger(__name__)

VIEWS: tuple[str, ...] = (
    "lema",
    "cot",
    "no_explanation",
    "no_incorrect_step",
    "no_corrected_solution",
    "cot_corrected",
)
# Training rows built and written together.
_BATCH_ROWS = 4096
# Long texts of the input rows that no training row uses: not read.
_UNUSED_COLUMNS = ("completion", "raw_output", "gold_solution", "reject_detail")
# Named held-out sets for decontamination: (problems, problems_split).
TEST_SETS: dict[str, tuple[str, str]] = {
    "gsm8k_test": ("gsm8k", "test"),
    "math_test": ("math", "test"),
    "math500": ("math500", "test"),
    "sample_test": ("sample", "test"),
}


@dataclass
class BuildConfig(ProblemArgs, HubArgs):
    """`lema-hub build`: CoT rows + correction rows, written as one config per ablation view."""

    corrections: str | None = field(
        default=None, metadata={"help": "Corrections folder or Hub id (accepted rows: its main config)"}
    )
    corrections_config: str | None = field(
        default=None,
        metadata={"help": "Config of the corrections folder to read (default: its main config)."},
    )
    include_gold: bool = field(
        default=True,
        metadata={"help": "CoT rows from the problems' gold solutions (`problems`, `problems_split`)"},
    )
    mistakes: str | None = field(
        default=None,
        metadata={"help": "Mistakes folder/Hub id: correct sampled paths come from `<task>-samples`"},
    )
    include_correct_samples: bool = field(
        default=False, metadata={"help": "Add correct sampled paths as extra CoT rows (de-duplicated)"}
    )
    views: list[str] = field(
        default_factory=lambda: list(VIEWS),
        metadata={
            "help": "Ablation views to write: lema, cot, no_explanation, no_incorrect_step, no_corrected_solution, cot_corrected."
        },
    )
    prompt_style: str = field(default="plain", metadata={"help": " | ".join(PROMPT_STYLES)})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The `<task>` prefix of the config names; default: corrections'"}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Default: outputs/<task>/mixture (plain) or mixture-chat"}
    )
    # Held-out set for 8-gram decontamination: gsm8k_test | math_test | math500 | sample_test | Hub id | file
    decontaminate: str | None = field(
        default=None,
        metadata={
            "help": "Drop rows sharing an n-gram with this test set: gsm8k_test | math_test | math500 | sample_test | a Hub id or file."
        },
    )
    decontaminate_path: str | None = field(
        default=None, metadata={"help": "Local file in the test set's original format (e.g. ../shared)"}
    )
    decontaminate_split: str = field(default="test", metadata={"help": "Split for a Hub id / file test set"})
    ngram: int = field(default=8, metadata={"help": "n of the n-gram overlap used for decontamination."})
    shuffle: bool = field(default=True, metadata={"help": "Shuffle the rows of each view (seeded)."})
    seed: int = field(default=42, metadata={"help": "Random seed (sampling, shuffling)."})

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        bad = [v for v in self.views if v not in VIEWS]
        if bad or not self.views:
            raise InvalidInputError(
                f"views must be a non-empty subset of {', '.join(VIEWS)}; got {self.views}."
            )
        if self.prompt_style not in PROMPT_STYLES:
            raise InvalidInputError(
                f"prompt_style must be {' or '.join(PROMPT_STYLES)}, got {self.prompt_style!r}."
            )
        if self.ngram < 1:
            raise InvalidInputError(f"ngram must be >= 1, got {self.ngram}.")


# --------------------------------------------------------------------------------------------------
# Row builders (all strings come from lema_hub.formats)
# --------------------------------------------------------------------------------------------------


def _lines_without(text: str, label: str) -> str:
    return "\n".join(ln for ln in text.split("\n") if not ln.startswith(label))


def correction_completion(row: dict, view: str = "lema") -> tuple[str, str]:
    """(prompt, completion) of one accepted correction in the paper's format, or an ablation of it."""

    steps = list(row["steps"])
    prompt = formats.correction_prompt(row["question"], steps)
    target = formats.correction_target(
        int(row["incorrect_step"]), row["explanation"], list(row["corrected_steps"])
    )
    head, sep, block = target.partition("\n" + formats.CORRECT_SOLUTION_LABEL)
    if view == "no_explanation":
        target = _lines_without(head, formats.EXPLANATION_LABEL) + sep + block
    elif view == "no_corrected_solution":
        target = head
    elif view == "no_incorrect_step":
        # The model is not told which step is wrong: the prompt stops before the `Incorrect Step:`
        # label and the completion starts at the explanation.
        prompt = prompt[: prompt.rindex(formats.INCORRECT_STEP_LABEL)]
        target = target.split("\n", 1)[1]
    return prompt, target


def cot_completion(question: str, steps: list[str], answer: str) -> tuple[str, str]:
    """(prompt, completion) of a CoT row: steps joined as a rationale + `The answer is X.`."""

    body = formats.steps_with_answer(list(steps), answer)[:-1]
    return formats.cot_prompt(question), formats.cot_target(" ".join(s.strip() for s in body), answer)


def _training_row(kind: str, origin: str, src: dict, prompt: str, completion: str, style: str) -> dict:

    row = formats.to_prompt_completion(prompt, completion, style)
    return {
        "kind": kind,
        "origin": origin,  # gold | sample | correction
        "problem_id": src.get("problem_id"),
        "question": src.get("question"),
        **row,
        "source": src.get("source"),
        "generator": src.get("generator"),
        "corrector": src.get("corrector"),
    }


def gold_cot_rows(problems: list[Any], style: str) -> list[dict]:

    rows = []
    for p in problems:
        d = p.to_dict() if hasattr(p, "to_dict") else dict(p)
        rationale, answer = formats.gold_rationale(d["gold_solution"])
        rows.append(
            _training_row(
                "cot",
                "gold",
                d,
                formats.cot_prompt(d["question"]),
                formats.cot_target(rationale, answer),
                style,
            )
        )
    return rows


def _word_key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def sample_cot_rows(samples: list[dict], existing: list[dict], style: str) -> tuple[list[dict], int]:
    """CoT rows from correct sampled paths, minus duplicates (of each other and of `existing` rows)."""
    seen = {(r["problem_id"], _word_key(_text(r["completion"]))) for r in existing}
    rows, dupes = [], 0
    for s in samples:
        if s.get("verdict") != "correct" or not s.get("steps"):
            continue
        answer = s.get("predicted_answer") or s.get("gold_answer")
        prompt, completion = cot_completion(s["question"], list(s["steps"]), str(answer))
        key = (s.get("problem_id"), _word_key(completion))
        if key in seen:
            dupes += 1
            continue
        seen.add(key)
        rows.append(_training_row("cot", "sample", s, prompt, completion, style))
    return rows, dupes


def _text(x: Any) -> str:
    return x if isinstance(x, str) else " ".join(m["content"] for m in x)


def view_rows(view: str, cot: list[dict], corrections: list[dict], style: str) -> list[dict]:
    """The rows of one ablation view."""
    return [_view_row(view, j, cot, corrections, style) for j in range(_view_size(view, cot, corrections))]


def _view_size(view: str, cot: list[dict], corrections: list[dict]) -> int:
    return len(cot) if view == "cot" else len(cot) + len(corrections)


def _view_row(view: str, j: int, cot: list[dict], corrections: list[dict], style: str) -> dict:
    """Row `j` of `view_rows(view, ...)`, built on its own (a view is written without holding all of it)."""
    if j < len(cot):
        return cot[j]
    return _correction_view_row(view, corrections[j - len(cot)], style)


def _correction_view_row(view: str, c: dict, style: str) -> dict:
    """The training row of one accepted correction in `view`."""
    if view == "cot_corrected":  # the paper's CoT control: corrected solutions as plain CoT rows
        k = int(c["incorrect_step"])
        full = corrected_solution(list(c["steps"]), list(c["corrected_steps"]), k)
        prompt, completion = cot_completion(c["question"], full, str(c["corrected_answer"]))
        return _training_row("cot", "correction", c, prompt, completion, style)
    prompt, completion = correction_completion(c, view)
    return _training_row("correction", "correction", c, prompt, completion, style)


# --------------------------------------------------------------------------------------------------
# Decontamination
# --------------------------------------------------------------------------------------------------


def ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def load_test_questions(spec: str, path: str | None = None, split: str = "test") -> list[str]:
    """Questions of a held-out set: a TEST_SETS name, a Hub id, or a local file."""

    problems, psplit = TEST_SETS.get(spec, (spec, split))
    args = ProblemArgs(problems=problems, problems_split=psplit, problems_path=path)
    return [p.question for p in load_problems(args)]


def decontaminate(rows: list[dict], test_questions: list[str], n: int = 8) -> tuple[list[dict], Counter]:
    """Drop rows whose question shares an n-gram with a test question; count the drops by kind."""
    test = set()
    for q in test_questions:
        test |= ngrams(q, n)
    kept, dropped = [], Counter()
    for r in rows:
        if ngrams(r["question"] or "", n) & test:
            dropped[r["kind"]] += 1
        else:
            kept.append(r)
    return kept, dropped


# --------------------------------------------------------------------------------------------------
# The `build` stage
# --------------------------------------------------------------------------------------------------


def build(cfg: BuildConfig) -> dict[str, Any]:
    """Write `<task>-<view>` configs of training rows; returns the summary (with `output_dir`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t0 = time.time()
    if not cfg.corrections and "cot" not in cfg.views:
        raise InvalidInputError(
            "build: set `corrections` (a corrections folder or Hub id) or build only the `cot` view."
        )
    # The corrections stay an Arrow table (a few KB per row, not a dict of Python objects); each
    # batch of a view takes its rows from it.
    corrections = pa.table({})
    name = cfg.dataset_config_name
    if cfg.corrections:
        config = cfg.corrections_config or main_config(cfg.corrections)
        corrections = load_row_table(
            cfg.corrections, config, missing_ok=True, skip_columns=_UNUSED_COLUMNS
        ).table
        if "accepted" in corrections.column_names:  # a null `accepted` is not accepted
            corrections = corrections.filter(pc.equal(corrections.column("accepted"), True))
        name = name or config
    name = name or cfg.problems.replace("/", "_")
    cot: list[dict] = []
    summary: dict[str, Any] = {"config_prefix": name, "prompt_style": cfg.prompt_style}
    if cfg.include_gold:
        cot = gold_cot_rows(load_problems(cfg), cfg.prompt_style)
    summary["gold_cot_rows"] = len(cot)
    if cfg.include_correct_samples:
        if not cfg.mistakes:
            raise InvalidInputError(
                "build: include_correct_samples needs `mistakes` (the mistakes folder or Hub id)."
            )
        mconf = main_config(cfg.mistakes)
        samples = load_rows(cfg.mistakes, f"{mconf}-samples", skip_columns=_UNUSED_COLUMNS)
        extra, dupes = sample_cot_rows(samples, cot, cfg.prompt_style)
        cot += extra
        summary.update(sample_cot_rows=len(extra), sample_duplicates_dropped=dupes)
    summary["correction_rows"] = corrections.num_rows

    if cfg.decontaminate:
        test_q = load_test_questions(cfg.decontaminate, cfg.decontaminate_path, cfg.decontaminate_split)
        cot, dropped_cot = decontaminate(cot, test_q, cfg.ngram)
        questions = corrections.column("question").to_pylist() if corrections.num_rows else []
        qrows = [{"question": q, "kind": "correction", "i": i} for i, q in enumerate(questions)]
        kept, dropped_corr = decontaminate(qrows, test_q, cfg.ngram)
        if corrections.num_rows:
            corrections = corrections.take([r["i"] for r in kept])
        del questions, qrows, kept
        summary["decontamination"] = {
            "test_set": cfg.decontaminate,
            "test_questions": len(test_q),
            "ngram": cfg.ngram,
            "dropped_cot_rows": dropped_cot["cot"],
            "dropped_correction_rows": dropped_corr["correction"],
        }

    out = Path(cfg.output_dir or f"outputs/{name}/mixture" + ("-chat" if cfg.prompt_style == "chat" else ""))
    views: dict[str, dict[str, int]] = {}
    feats = training_row_features(cfg.prompt_style)
    for view in cfg.views:
        n = len(cot) if view == "cot" else len(cot) + corrections.num_rows
        if not n:
            logger.warning("view %s is empty; skipped", view)
            continue
        # Shuffling the row numbers gives the order shuffling the rows would (same seed, same
        # length); the rows are then built and written a batch at a time.
        order = list(range(n))
        if cfg.shuffle:
            random.Random(cfg.seed).shuffle(order)
        kinds: Counter = Counter()

        def batches(view: str = view, order: list[int] = order, kinds: Counter = kinds):
            for lo in range(0, len(order), _BATCH_ROWS):
                part = order[lo : lo + _BATCH_ROWS]
                taken = [j - len(cot) for j in part if j >= len(cot)]
                fetched = iter(corrections.take(taken).to_pylist() if taken else [])
                rows = [
                    cot[j] if j < len(cot) else _correction_view_row(view, next(fetched), cfg.prompt_style)
                    for j in part
                ]
                kinds.update(r["kind"] for r in rows)
                yield rows

        save_dataset_config_stream(out, f"{name}-{view}", batches(), feats)
        views[view] = {"cot": kinds["cot"], "correction": kinds["correction"], "total": n}
    summary.update(views=views, output_dir=str(out), wall_s=round(time.time() - t0, 2))
    finish(out, "mixture", cfg, summary, recipe="build")
    logger.info("mixture views: %s", views)
    return summary
