"""Answer extraction and grading: ``correct`` | ``wrong`` | ``no_answer`` | ``ungradeable``, safe in any thread.

Where things live: the answer rules (extraction, numbers, math-verify equivalence) are
``lema_hub.answers``, the bounded worker processes ``lema_hub.grading_pool``; this module turns
them into verdicts (``grade``, ``grade_many``, and ``grade_rows``, which every stage grades with).

Decisions (tested in ``tests/test_grading.py``; agreement with human labels in BENCHMARKS.md):

* ``extraction="strict"`` (the default; the paper's protocol): the predicted answer is the text
  after the last ``The answer is`` (to the end of that line, a ``\\boxed{}`` in it, or display math
  opening right after it, which may span lines), falling back to the last ``\\boxed{}``.
  ``extraction="flexible"`` (what collection uses) also reads, in this order, the last
  ``The final answer is`` / ``Final answer:`` / ``Answer:`` / ``A:`` / ``#### X``, then the answer
  the last sentence of the last paragraph states (its last math or bold answer, a number after its
  last "is"/"=", else its last number; the sentence before it when the last one states none; none
  when the last sentence negates, "... is not a solution"). Extraction is linear in the input.
* No answer at all -> ``no_answer`` with ``predicted_answer=None`` (an unfinished or malformed path
  is not a wrong answer). ``wrong`` is an answer that differs from the gold. ``truncated`` (in
  ``VERDICTS``) is set by collection, which knows the finish reason.
* The gold may be a bare answer, a GSM8K solution (``#### N``) or a MATH solution (last ``\\boxed{}``).
  A gold we cannot read is ``ungradeable``, never ``wrong``.
* GSM8K (``task="gsm8k"``, numeric golds): the answer is one number. ``$``, ``\\$``, units and
  words around it, a trailing period and thousands commas (``1,000``) are ignored; ``25%`` equals
  ``25`` (the percent sign is a unit, GSM8K golds are in the unit asked), but ``0.25`` does not
  equal ``25``. The first number of the answer counts, after the last ``=`` if there is one
  (``5 + 3 = 8`` -> 8; ``7 boxes, with 2 left`` -> 7), unless it is part of an expression
  (``2^{3}``, ``10^{100000}``, ``3 + 4``, ``\\sqrt{16}``): that is ``wrong`` with a reason, never
  its first number. A minus before ``$`` or a space keeps its sign (``-$15`` is -15). Numbers compare
  exactly as rationals: ``18.00`` == ``18``, ``3/4`` == ``0.75``, ``17.99`` != ``18`` (no rounding).
  This path is plain Python on a regex-validated number: no sympy, bounded by the input caps.
* MATH (``task="math"``): both answers go through math-verify's LaTeX parser and ``verify``
  (its equivalence rules: ``\\frac12`` == ``0.5``, intervals, sets, ``\\text{}`` units dropped,
  ``25\\%`` == ``0.25``; numbers compared at math-verify's default 6-decimal rounding). MATH's
  ``5,\\!525`` thousands separators and ``\\frac \\pi4`` are normalized first; an answer that is
  all ``\\text{...}`` (``\\text{A,D}``) is its content and a trailing ``\\text{ square inches}`` unit
  is dropped (each tried before the answer as written). An answer math-verify cannot parse is
  ``ungradeable``.
  math-verify's ``ExprExtractionConfig`` is never used on model text: it calls ``sympy.parse_expr``,
  which ``eval``s its input.
* Time bound: math-verify runs with its own (signal-based, main-thread-only) timeouts off, in
  helper processes (``python -c`` workers speaking JSON lines). Each answer gets a soft bound
  (``setitimer`` inside the worker) and a hard bound (the parent kills the worker); either way the
  verdict is ``ungradeable`` with a reason. Extraction and the GSM8K comparison run in the
  caller's process in linear time (under 100 ms for any input under the size caps, see
  BENCHMARKS.md). So ``grade`` is safe and bounded from any thread.
* Bad input (None, non-strings, empty strings, over-long strings, pathological LaTeX) ->
  ``ungradeable`` with a reason. No exception escapes ``grade``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from lema_hub.answers import (
    DEFAULT_EXTRACTION,
    EXTRACTIONS,
    MAX_ANSWER_CHARS,
    MAX_PREDICTION_CHARS,
    TASKS,
    check_extraction,
    compare_gsm8k,
    extract_answer,
    format_ok,
    fraction_text,
    gold_answer_of,
    gsm8k_number,
    strip_answer,
)
from lema_hub.formats import ANSWER_PREFIX
from lema_hub.grading_pool import DEFAULT_TIMEOUT_S, shared_pool, shutdown, warmup
from lema_hub.problems import task_of
from lema_hub.schema import CHOICE_TASK

logger = logging.getLogger(__name__)

MAX_GOLD_CHARS = 20_000


# Verdict names. ``grade`` returns the first three and ``no_answer``; ``truncated`` (the path was cut
# at ``max_tokens`` and did not grade correct) is set by collection, which knows the finish reason.
CORRECT, WRONG, NO_ANSWER, TRUNCATED, UNGRADEABLE = VERDICTS = (
    "correct",  # the answer equals the gold
    "wrong",  # an answer that differs from the gold
    "no_answer",  # the prediction states no final answer
    "truncated",  # cut at max_tokens (finish_reason "length") and not correct
    "ungradeable",  # the gold (or the prediction's LaTeX) cannot be read, or bad input
)


@dataclass
class Verdict:
    verdict: str  # one of VERDICTS
    predicted_answer: str | None
    reason: str
    # Multiple-choice tasks (CSQA) only: the candidate the stated answer maps to, and whether a
    # mapping was needed (the stated answer is not one of the candidates as written).
    mapped_answer: str | None = None
    mapping_needed: bool | None = None
    # How it matched (``csqa.MAPPING_KINDS``: exact | label | contains | edit_distance | no_match).
    mapping: str | None = None

    @property
    def is_correct(self) -> bool:
        return self.verdict == "correct"

    def to_dict(self) -> dict:
        return asdict(self)


def _ungradeable(reason: str, predicted: str | None = None) -> Verdict:
    return Verdict("ungradeable", predicted, reason)


def _verdict_from(status: list, predicted: str) -> Verdict:
    kind, value = status
    if kind == "ok":
        verdict, reason = value
        return Verdict(verdict, predicted, reason)
    if kind == "timeout":
        return _ungradeable(f"grading {value}", predicted)
    return _ungradeable(f"grading failed: {value}", predicted)


# ------------------------------------------------------------------------------------- grading
_NO_ANSWER_REASON = {
    "strict": "no final answer ('The answer is ...' or \\boxed{}) in the prediction (strict extraction)",
    "flexible": "no final answer in the prediction (flexible extraction)",
}


def _prepare(
    prediction, gold, task: str, extraction: str = DEFAULT_EXTRACTION
) -> tuple[Verdict | None, str | None, str | None]:
    """Input checks + extraction (cheap, in-process, linear). Returns (early verdict, predicted, gold answer)."""
    if extraction not in EXTRACTIONS:
        return _ungradeable(f"unknown extraction {extraction!r}; expected one of {EXTRACTIONS}"), None, None
    if task not in TASKS:
        return _ungradeable(f"unknown task {task!r}; expected one of {TASKS}"), None, None
    if not isinstance(gold, str):
        return _ungradeable(f"gold is {type(gold).__name__}, not a string"), None, None
    if len(gold) > MAX_GOLD_CHARS:
        return _ungradeable(f"gold is too long ({len(gold)} > {MAX_GOLD_CHARS} characters)"), None, None
    if not isinstance(prediction, str):
        return _ungradeable(f"prediction is {type(prediction).__name__}, not a string"), None, None
    if not prediction.strip():
        return _ungradeable("prediction is empty"), None, None
    if len(prediction) > MAX_PREDICTION_CHARS:
        return (
            _ungradeable(f"prediction is too long ({len(prediction)} > {MAX_PREDICTION_CHARS} characters)"),
            None,
            None,
        )
    gold_answer = gold_answer_of(gold, task)
    if not gold_answer:
        return _ungradeable("no answer found in the gold"), None, None
    if len(gold_answer) > MAX_ANSWER_CHARS:
        return _ungradeable(f"gold answer is too long ({len(gold_answer)} characters)"), None, None
    predicted = extract_answer(prediction, task, extraction)
    if predicted is None:
        if task == "gsm8k" and gsm8k_number(gold_answer) is None:
            return _ungradeable(f"gold answer {gold_answer[:80]!r} is not a number"), None, None
        return Verdict(NO_ANSWER, None, _NO_ANSWER_REASON[extraction]), None, None
    if len(predicted) > MAX_ANSWER_CHARS:
        return (
            _ungradeable(f"predicted answer is too long ({len(predicted)} characters)", predicted[:200]),
            None,
            None,
        )
    return None, predicted, gold_answer


def grade(
    prediction: str,
    gold: str,
    task: str = "gsm8k",
    timeout: float = DEFAULT_TIMEOUT_S,
    extraction: str = DEFAULT_EXTRACTION,
) -> Verdict:
    """Grade one completion against a gold answer (or gold solution). Thread-safe, time-bounded, never raises.

    ``extraction``: ``strict`` (the paper's protocol, the default) or ``flexible`` (see
    ``extract_answer``). Extraction and GSM8K comparison run in-process in linear time (bounded by
    the input caps); MATH answers go to a grading worker process with a soft and a hard time bound.
    """
    try:
        early, predicted, gold_answer = _prepare(prediction, gold, task, extraction)
        if early is not None:
            return early
        assert predicted is not None and gold_answer is not None
        if task == "gsm8k":
            verdict, reason = compare_gsm8k(predicted, gold_answer)
            return Verdict(verdict, predicted, reason)
        status = shared_pool().run("compare", [[predicted, gold_answer, task]], timeout)[0]
        return _verdict_from(status, predicted)
    except Exception as e:  # the contract: no exception escapes
        logger.exception("grading failed")
        return _ungradeable(f"grading failed: {type(e).__name__}: {str(e)[:200]}")


def grade_many(
    predictions: Sequence[str] | Iterable[str],
    golds: Sequence[str] | Iterable[str],
    task: str = "gsm8k",
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    chunk_size: int = 64,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[Verdict]:
    """Grade many completions; same verdicts as ``grade`` one by one (same ``extraction``).

    MATH answers are spread over ``workers`` grading processes (default: CPU count) in chunks;
    GSM8K answers are compared in this process (faster than any pool). ``workers=1`` is serial.
    """
    check_extraction(extraction)
    predictions = list(predictions)
    golds = list(golds)
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} golds")
    workers = workers or os.cpu_count() or 1
    # GSM8K compares plain numbers in-process (microseconds): a pool would only add IPC.
    if workers <= 1 or len(predictions) <= 1 or task == "gsm8k":
        return [grade(p, g, task, timeout, extraction) for p, g in zip(predictions, golds)]

    results: list[Verdict | None] = [None] * len(predictions)
    todo: list[tuple[int, str, str]] = []
    for i, (p, g) in enumerate(zip(predictions, golds)):
        early, predicted, gold_answer = _prepare(p, g, task, extraction)
        if early is not None:
            results[i] = early
        else:
            todo.append((i, predicted, gold_answer))  # type: ignore[arg-type]
    chunks = [todo[k : k + chunk_size] for k in range(0, len(todo), chunk_size)]
    pool = shared_pool(workers)

    def run_chunk(chunk: list[tuple[int, str, str]]) -> None:
        statuses = pool.run("compare", [[p, g, task] for _, p, g in chunk], timeout)
        for (i, p, _), status in zip(chunk, statuses):
            results[i] = _verdict_from(status, p)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(run_chunk, chunks))
    return [r if r is not None else _ungradeable("not graded") for r in results]


def grade_choice(
    prediction: str | None,
    gold: str,
    candidates: Sequence[str] | None,
    choice_mapping: str = "lema_hub",
) -> Verdict:
    """Grade a multiple-choice (CSQA) completion: the text after the last "The answer is" (the
    paper's rule, whatever ``extraction`` the stage uses: the flexible fallbacks read numbers, not
    choices), matched to a candidate by ``csqa.match_candidate`` under ``choice_mapping``
    (``lema_hub``: bare labels by position, no match for an answer near no candidate; ``paper``: the
    nearest candidate by edit distance, always), compared with the gold candidate. Never raises."""
    from lema_hub.csqa import match_candidate

    try:
        if not candidates:
            return _ungradeable("the problem has no candidate answers")
        if not isinstance(gold, str) or not gold.strip():
            return _ungradeable("no gold answer")
        if not isinstance(prediction, str):
            return _ungradeable(f"prediction is {type(prediction).__name__}, not a string")
        if len(prediction) > MAX_PREDICTION_CHARS:
            return _ungradeable(
                f"prediction is too long ({len(prediction)} > {MAX_PREDICTION_CHARS} characters)"
            )
        answer = extract_answer(prediction, "gsm8k", "strict")
        if answer is None:
            return Verdict(NO_ANSWER, None, _NO_ANSWER_REASON["strict"])
        answer = answer[:MAX_ANSWER_CHARS]
        choice, kind = match_candidate(answer, candidates, choice_mapping)
        extra = {"mapping_needed": kind != "exact", "mapping": kind}
        if choice is None:
            return Verdict(WRONG, answer, f"{answer[:80]!r} matches no candidate; gold {gold!r}", **extra)
        verdict = CORRECT if choice.strip() == gold.strip() else WRONG
        how = {
            "exact": "is the candidate",
            "label": "is the label of the candidate",
            "contains": "names the candidate",
            "edit_distance": "mapped to the nearest candidate (edit distance)",
        }[kind]
        return Verdict(
            verdict, answer, f"{answer[:80]!r} {how} {choice!r}; gold {gold!r}", mapped_answer=choice, **extra
        )
    except Exception as e:  # the contract: no exception escapes
        logger.exception("grading failed")
        return _ungradeable(f"grading failed: {type(e).__name__}: {str(e)[:200]}")


def _candidates(row: Mapping) -> Sequence[str] | None:
    return row.get("candidates")


def _completion(row: Mapping) -> str | None:
    return row["completion"]


def _gold(row: Mapping) -> str:
    return row["gold_answer"]


def grade_rows(
    rows: Sequence[Mapping],
    *,
    extraction: str = DEFAULT_EXTRACTION,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    text: Callable[[Mapping], str | None] = _completion,
    gold: Callable[[Mapping], str] = _gold,
    task: Callable[[Mapping], str] = task_of,
    candidates: Callable[[Mapping], Sequence[str] | None] = _candidates,
    choice_mapping: str = "lema_hub",
) -> list[Verdict]:
    """One verdict per row, in order: the rows of each task (``task(row)``, by default
    ``problems.task_of``) graded together by ``grade_many`` with ``workers``.

    The one way every stage grades rows (collect, correct, evaluate); each stage maps the verdicts
    onto its own columns. ``text``/``gold`` read what is graded (default: ``completion`` against
    ``gold_answer``). Multiple-choice rows (task ``csqa``) are graded by ``grade_choice`` against
    ``candidates(row)`` (default: the row's ``candidates``) under ``choice_mapping``.
    """
    check_extraction(extraction)
    by_task: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_task.setdefault(task(row), []).append(i)
    out: list[Verdict | None] = [None] * len(rows)
    for t, idx in by_task.items():
        if t == CHOICE_TASK:
            for i in idx:
                out[i] = grade_choice(text(rows[i]), gold(rows[i]), candidates(rows[i]), choice_mapping)
            continue
        verdicts = grade_many(
            [text(rows[i]) for i in idx],
            [gold(rows[i]) for i in idx],
            task=t,
            workers=workers,
            timeout=timeout,
            extraction=extraction,
        )
        for i, v in zip(idx, verdicts):
            out[i] = v
    return [v if v is not None else _ungradeable("not graded") for v in out]


def answers_match(a: str, b: str, task: str = "gsm8k", timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two extracted answers are equivalent (for majority votes); False when either is unreadable."""
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
        return False
    if task == "gsm8k":
        return compare_gsm8k(strip_answer(a), strip_answer(b))[0] == "correct"
    status = shared_pool().run("compare", [[strip_answer(a), strip_answer(b), task]], timeout)[0]
    return status[0] == "ok" and status[1][0] == "correct"


def answer_key(answer: str, task: str = "gsm8k", timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """A canonical key for grouping answers: ``18``, ``18.0`` and ``$18`` share one (GSM8K numbers);
    MATH answers key on math-verify's parsed form, else the whitespace-free text."""
    if not isinstance(answer, str):
        return ""
    s = strip_answer(answer)
    if task == "gsm8k":
        x = gsm8k_number(s)
        return fraction_text(x) if x is not None else "text:" + re.sub(r"\s+", "", s)
    if len(s) > MAX_ANSWER_CHARS:
        return "text:" + re.sub(r"\s+", "", s)[:MAX_ANSWER_CHARS]
    status = shared_pool().run("key", [[s]], timeout)[0]
    return status[1] if status[0] == "ok" else "text:" + re.sub(r"\s+", "", s)


__all__ = [
    "ANSWER_PREFIX",
    "CORRECT",
    "DEFAULT_EXTRACTION",
    "DEFAULT_TIMEOUT_S",
    "EXTRACTIONS",
    "NO_ANSWER",
    "TASKS",
    "TRUNCATED",
    "UNGRADEABLE",
    "VERDICTS",
    "WRONG",
    "Verdict",
    "answer_key",
    "answers_match",
    "grade_choice",
    "extract_answer",
    "format_ok",
    "gold_answer_of",
    "grade",
    "grade_many",
    "grade_rows",
    "shutdown",
    "warmup",
]
