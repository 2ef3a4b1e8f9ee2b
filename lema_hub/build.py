"""Training rows: CoT rows from gold (+ correct sampled paths) and correction rows, in ablation views.

CSQA (multiple choice) has no gold rationale: its CoT rows come from correct sampled paths only
(`include_correct_samples`; the paper used GPT-4 rationales, which were never released), with the
paper's CSQA prompt, and its correction rows use the CSQA schema (`Mistakes:` / `Corrected Answer:`,
no step index, so its `no_incorrect_step` rows are its `lema` rows).

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
from typing import TYPE_CHECKING, Any

from lema_hub import csqa, formats
from lema_hub.artifacts import (
    ConfigGroup,
    HubArgs,
    load_row_table,
    load_rows,
    main_config,
    save_dataset_config,
    save_dataset_config_stream,
)
from lema_hub.errors import InvalidInputError
from lema_hub.formats import corrected_solution
from lema_hub.problems import ProblemArgs, load_problems, task_of
from lema_hub.publish import finish
from lema_hub.schema import CHOICE_TASK, PROMPT_STYLES, training_row_features

if TYPE_CHECKING:
    import pyarrow as pa

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
# Long texts of the input rows that no training row uses: not read (`completion` is: a CSQA
# correction row's prompt quotes the original answer whole).
_UNUSED_COLUMNS = ("raw_output", "gold_solution", "reject_detail")
# Named held-out sets for decontamination: (problems, problems_split).
TEST_SETS: dict[str, tuple[str, str]] = {
    "gsm8k_test": ("gsm8k", "test"),
    "math_test": ("math", "test"),
    "math500": ("math500", "test"),
    "sample_test": ("sample", "test"),
    "csqa_dev": ("csqa", "validation"),
    "csqa_sample_test": ("csqa_sample", "test"),
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


def choice_correction_completion(row: dict, view: str = "lema") -> tuple[str, str]:
    """(prompt, completion) of one accepted CSQA correction: the question, candidates and original
    answer, then `Mistakes: ...` / `Corrected Answer: { ... }` (ablations drop one of the two; there
    is no step index, so `no_incorrect_step` is the full row)."""
    prompt = csqa.correction_prompt(row["question"], list(row["candidates"]), row["completion"])
    mistakes, corrected = row["explanation"], "\n".join(row["corrected_steps"])
    if view == "no_explanation":
        mistakes = None
    elif view == "no_corrected_solution":
        corrected = None
    return prompt, csqa.correction_target(mistakes, corrected)


def correction_completion(row: dict, view: str = "lema") -> tuple[str, str]:
    """(prompt, completion) of one accepted correction in the paper's format, or an ablation of it."""

    if task_of(row) == CHOICE_TASK:
        return choice_correction_completion(row, view)
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
    """CoT rows from the problems' gold solutions (CSQA problems have none and are skipped)."""
    rows = []
    for p in problems:
        d = p.to_dict() if hasattr(p, "to_dict") else dict(p)
        if task_of(d) == CHOICE_TASK:
            continue
        rationale, answer = formats.gold_rationale(d["gold_solution"])
        rows.append(
            _training_row(
                "cot",
                "gold",
                d,
                formats.problem_prompt(d),
                formats.cot_target(rationale, answer),
                style,
            )
        )
    return rows


def _word_key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def sample_cot_rows(
    samples: list[dict], existing: list[dict], style: str
) -> tuple[list[dict], dict[str, int]]:
    """CoT rows from correct sampled paths, minus duplicates (of each other and of `existing` rows)
    and, for CSQA, minus paths correct only through the edit-distance mapping (their stated answer is
    not the gold candidate as written: `csqa.states_exactly`). Returns (rows, {"duplicates": n,
    "inexact": m})."""
    seen = {(r["problem_id"], _word_key(_text(r["completion"]))) for r in existing}
    rows: list[dict] = []
    dropped = {"duplicates": 0, "inexact": 0}
    for s in samples:
        if s.get("verdict") != "correct" or not s.get("steps"):
            continue
        if task_of(s) == CHOICE_TASK:  # the path as written, its answer named as the gold candidate
            if not csqa.states_exactly(s.get("completion"), str(s.get("gold_answer") or "")):
                dropped["inexact"] += 1
                continue
            prompt, completion = (
                formats.problem_prompt(s),
                csqa.cot_completion(s["completion"], s["gold_answer"]),
            )
            if completion is None:
                continue
        else:
            answer = s.get("predicted_answer") or s.get("gold_answer")
            prompt, completion = cot_completion(s["question"], list(s["steps"]), str(answer))
        key = (s.get("problem_id"), _word_key(completion))
        if key in seen:
            dropped["duplicates"] += 1
            continue
        seen.add(key)
        rows.append(_training_row("cot", "sample", s, prompt, completion, style))
    return rows, dropped


_TASK_COLUMNS = ("source", "candidates", "gold_answer")


def _task_columns(corrections: pa.Table) -> list[dict[str, Any]]:
    """The columns `task_of` reads, a small dict per row."""
    names = [n for n in _TASK_COLUMNS if n in corrections.column_names]
    return corrections.select(names).to_pylist()


def _rows_of(table: pa.Table, rows: pa.Array, columns: tuple[str, ...]) -> pa.Table:
    """`columns` (those the table has) of the given rows: a copy of a few columns, not of the table."""
    return table.select([c for c in columns if c in table.column_names]).take(rows)


def exact_corrections(corrections: pa.Table) -> tuple[pa.Table, int]:
    """Accepted corrections minus CSQA ones whose corrected answer is not the gold candidate as
    written (accepted by an older `correct`, before `inexact_choice`); returns (kept, dropped)."""
    tasks = [task_of(c) for c in _task_columns(corrections)]
    if CHOICE_TASK not in tasks:
        return corrections, 0
    steps = corrections.column("corrected_steps").to_pylist()
    golds = corrections.column("gold_answer").to_pylist()
    keep = [
        t != CHOICE_TASK or csqa.states_exactly("\n".join(st or []), str(g or ""))
        for t, st, g in zip(tasks, steps, golds)
    ]
    import pyarrow as pa

    kept = corrections.filter(pa.array(keep, pa.bool_()))
    return kept, corrections.num_rows - kept.num_rows


def _family(task: str) -> str:
    return "multiple-choice (CSQA)" if task == CHOICE_TASK else "math"


def check_task_families(sources: dict[str, set[str]]) -> str | None:
    """The one task family (`_family`) of the rows' sources ({what: {task_of each row}}), None when
    there are no rows; InvalidInputError naming both sides when they mix math and multiple choice."""
    seen: dict[str, str] = {}
    for what, tasks in sources.items():
        for fam in sorted({_family(t) for t in tasks}):
            seen.setdefault(fam, what)
    if len(seen) > 1:
        (a, wa), (b, wb) = sorted(seen.items())
        raise InvalidInputError(
            f"build: mixed tasks: {a} rows from {wa}, {b} rows from {wb}; build one task at a time "
            "(problems, corrections and mistakes of the same task)."
        )
    return next(iter(seen), None)


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
        if task_of(c) == CHOICE_TASK:  # the corrected answer is a whole CSQA answer already
            completion = csqa.cot_completion("\n".join(c["corrected_steps"]), c["gold_answer"])
            # `exact_corrections` kept only corrections whose last "The answer is" names the gold
            assert completion is not None
            return _training_row("cot", "correction", c, formats.problem_prompt(c), completion, style)
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


def load_test_problems(spec: str, path: str | None = None, split: str = "test") -> list[Any]:
    """Problems of a held-out set: a TEST_SETS name, a Hub id, or a local file."""

    problems, psplit = TEST_SETS.get(spec, (spec, split))
    return load_problems(ProblemArgs(problems=problems, problems_split=psplit, problems_path=path))


def load_test_questions(spec: str, path: str | None = None, split: str = "test") -> list[str]:
    """Questions of a held-out set: a TEST_SETS name, a Hub id, or a local file."""
    return [p.question for p in load_test_problems(spec, path, split)]


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
    # The corrections stay the Arrow table as read (a few KB per row, not a dict of Python
    # objects); `used` lists the row numbers kept (accepted, exact, not contaminated), so no
    # filtered copy of the table is made, and each batch of a view takes its rows from it.
    corrections = pa.table({})
    used = pa.array([], pa.int64())
    name = cfg.dataset_config_name
    families: dict[str, set[str]] = {}  # where rows come from -> their tasks (one family per build)
    if cfg.corrections:
        config = cfg.corrections_config or main_config(cfg.corrections)
        corrections = load_row_table(
            cfg.corrections, config, missing_ok=True, skip_columns=_UNUSED_COLUMNS
        ).table
        if "accepted" in corrections.column_names:  # a null `accepted` is not accepted
            accepted = pc.fill_null(pc.equal(corrections.column("accepted"), True), False)
            used = pc.indices_nonzero(accepted).cast(pa.int64())
        else:
            used = pa.array(range(corrections.num_rows), pa.int64())
        families[f"the corrections {cfg.corrections} [{config}]"] = {
            task_of(c) for c in _task_columns(_rows_of(corrections, used, _TASK_COLUMNS))
        }
        name = name or config
    name = name or cfg.problems.replace("/", "_")
    cot: list[dict] = []
    summary: dict[str, Any] = {"config_prefix": name, "prompt_style": cfg.prompt_style}
    if cfg.include_gold:
        problems = load_problems(cfg)
        families[f"the problems {cfg.problems}"] = {task_of(p) for p in problems}
        check_task_families(families)
        cot = gold_cot_rows(problems, cfg.prompt_style)
        no_gold = sum(task_of(p) == CHOICE_TASK for p in problems)
        del problems  # the CoT rows are built: not held while the views are written
        if no_gold:  # CSQA: CoT rows come from correct sampled paths (include_correct_samples)
            summary["no_gold_rationale"] = no_gold
            logger.info("%d CSQA problems have no gold rationale: no gold CoT rows for them", no_gold)
    summary["gold_cot_rows"] = len(cot)
    if cfg.include_correct_samples:
        if not cfg.mistakes:
            raise InvalidInputError(
                "build: include_correct_samples needs `mistakes` (the mistakes folder or Hub id)."
            )
        mconf = main_config(cfg.mistakes)
        # CSQA's sampled CoT rows are cut from the path's own text, so `completion` is read here.
        samples = load_rows(cfg.mistakes, f"{mconf}-samples", skip_columns=("gold_solution",))
        families[f"the mistakes {cfg.mistakes} [{mconf}-samples]"] = {task_of(s) for s in samples}
        check_task_families(families)
        extra, left_out = sample_cot_rows(samples, cot, cfg.prompt_style)
        cot += extra
        summary.update(
            sample_cot_rows=len(extra),
            sample_duplicates_dropped=left_out["duplicates"],
            # CSQA: correct only through the edit-distance mapping, so not training data
            sample_inexact_dropped=left_out["inexact"],
        )
    family = check_task_families(families)
    if family == _family(CHOICE_TASK):  # (math corrections are all exact: nothing to drop)
        corrections, inexact = exact_corrections(corrections.take(used))
        used = pa.array(range(corrections.num_rows), pa.int64())
        summary["inexact_corrections_dropped"] = inexact
    summary["correction_rows"] = len(used)

    before = len(cot) + len(used)
    if cfg.decontaminate:
        test = load_test_problems(cfg.decontaminate, cfg.decontaminate_path, cfg.decontaminate_split)
        test_family = check_task_families({f"the test set {cfg.decontaminate}": {task_of(p) for p in test}})
        if family and test_family and test_family != family:
            raise InvalidInputError(
                f"build: decontaminate {cfg.decontaminate} is a {test_family} test set but the training "
                f"rows are {family}; name the held-out set of their task ({_test_sets_of(family)})."
            )
        test_q = [p.question for p in test]
        cot, dropped_cot = decontaminate(cot, test_q, cfg.ngram)
        questions = _rows_of(corrections, used, ("question",)).column("question").to_pylist()
        qrows = [{"question": q, "kind": "correction", "i": i} for i, q in enumerate(questions)]
        kept, dropped_corr = decontaminate(qrows, test_q, cfg.ngram)
        used = used.take(pa.array([r["i"] for r in kept], pa.int64()))
        del questions, qrows, kept
        summary["decontamination"] = {
            "test_set": cfg.decontaminate,
            "test_questions": len(test_q),
            "ngram": cfg.ngram,
            "dropped_cot_rows": dropped_cot["cot"],
            "dropped_correction_rows": dropped_corr["correction"],
        }
    if not cot and not (len(used) and any(v != "cot" for v in cfg.views)):
        # Before anything is written: the output folder is left as it was.
        raise InvalidInputError(f"build: no training rows: {_no_rows_reason(cfg, summary, before)}.")

    out = Path(cfg.output_dir or f"outputs/{name}/mixture" + ("-chat" if cfg.prompt_style == "chat" else ""))
    views: dict[str, dict[str, int]] = {}
    feats = training_row_features(cfg.prompt_style)
    empty: list[str] = []
    # One commit for every view and the removal of the empty ones: a failed build keeps the old views.
    with ConfigGroup(out) as group:
        for view in cfg.views:
            n = len(cot) if view == "cot" else len(cot) + len(used)
            if not n:
                # An earlier run's rows of this view would outlive the run this folder now describes.
                logger.warning(
                    "view %s is empty; not written (an earlier run's %s-%s is removed)", view, name, view
                )
                save_dataset_config(out, f"{name}-{view}", {"train": []}, features=feats, group=group)
                empty.append(view)
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
                    picked = used.take(pa.array(taken, pa.int64()))
                    fetched = iter(corrections.take(picked).to_pylist() if taken else [])
                    rows = [
                        cot[j]
                        if j < len(cot)
                        else _correction_view_row(view, next(fetched), cfg.prompt_style)
                        for j in part
                    ]
                    kinds.update(r["kind"] for r in rows)
                    yield rows

            save_dataset_config_stream(out, f"{name}-{view}", batches(), feats, group=group)
            views[view] = {"cot": kinds["cot"], "correction": kinds["correction"], "total": n}
    if empty:
        summary["empty_views"] = empty
    summary.update(views=views, output_dir=str(out), wall_s=round(time.time() - t0, 2))
    cot, corrections = [], pa.table({})  # the views are written: not held while the card reads them
    finish(out, "mixture", cfg, summary, recipe="build")
    logger.info("mixture views: %s", views)
    return summary


def _test_sets_of(family: str) -> str:
    names = [n for n, (problems, _) in TEST_SETS.items() if _family(task_of(problems)) == family]
    return ", ".join(names) + ", or a Hub id / file of that task"


def _no_rows_reason(cfg: BuildConfig, summary: dict[str, Any], before: int) -> str:
    """Why a build has no row to write (for its one-line error)."""
    dec = summary.get("decontamination")
    if dec and before:
        return f"decontamination against {dec['test_set']} dropped all {before} rows"
    why = []
    if summary.get("no_gold_rationale") and not cfg.include_correct_samples:
        why.append("CSQA has no gold rationale; set include_correct_samples: true (and `mistakes`)")
    elif cfg.include_correct_samples:
        left = summary.get("sample_inexact_dropped")
        why.append(
            f"no gold CoT rows and no correct sampled path in {cfg.mistakes}"
            + (f" ({left} correct only through the edit-distance mapping, left out)" if left else "")
        )
    else:
        why.append("no gold CoT rows (include_gold) and include_correct_samples is false")
    if any(v != "cot" for v in cfg.views):
        left = summary.get("inexact_corrections_dropped")
        why.append(
            f"no accepted corrections in {cfg.corrections}"
            + (f" ({left} reach gold only through the edit-distance mapping, left out)" if left else "")
            if cfg.corrections
            else "no `corrections` set"
        )
    return "; ".join(why)
