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

import contextlib
import hashlib
import logging
import random
import re
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lema_hub import csqa, formats
from lema_hub.artifacts import (
    ConfigGroup,
    HubArgs,
    StreamedRows,
    main_config,
    save_dataset_config,
    save_dataset_config_stream,
    stream_rows,
)
from lema_hub.errors import InvalidInputError
from lema_hub.formats import corrected_solution
from lema_hub.problems import ProblemArgs, iter_problems, load_problems, task_of
from lema_hub.publish import finish
from lema_hub.schema import CHOICE_TASK, PROMPT_STYLES, conform, training_row_features

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from datasets import Features

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
    seen = {_dedup_key(r["problem_id"], _text(r["completion"])) for r in existing}
    dropped = {"duplicates": 0, "inexact": 0}
    rows = list(_new_sample_rows(samples, seen, dropped, style))
    return rows, dropped


def _dedup_key(problem_id: Any, completion: str) -> bytes:
    """16 bytes standing for (problem, the completion's words): what makes two CoT rows the same."""
    return hashlib.blake2b(repr((problem_id, _word_key(completion))).encode(), digest_size=16).digest()


def _new_sample_rows(
    samples: Iterable[dict], seen: set[bytes], dropped: dict[str, int], style: str
) -> Iterator[dict]:
    """`sample_cot_rows`' rows, one sample at a time: `seen` (the keys of the rows so far) and
    `dropped` are updated as they go."""
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
        key = _dedup_key(s.get("problem_id"), completion)
        if key in seen:
            dropped["duplicates"] += 1
            continue
        seen.add(key)
        yield _training_row("cot", "sample", s, prompt, completion, style)


_TASK_COLUMNS = ("source", "candidates", "gold_answer")


def _states_gold(c: dict) -> bool:
    """False for a CSQA correction whose corrected answer is not the gold candidate as written
    (accepted by an older `correct`, before `inexact_choice`)."""
    if task_of(c) != CHOICE_TASK:
        return True
    return csqa.states_exactly("\n".join(c.get("corrected_steps") or []), str(c.get("gold_answer") or ""))


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
            # `_states_gold` kept only corrections whose last "The answer is" names the gold
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


def _test_ngrams(test_questions: list[str], n: int) -> set[tuple[str, ...]]:
    """Every n-gram of the test questions."""
    test: set[tuple[str, ...]] = set()
    for q in test_questions:
        test |= ngrams(q, n)
    return test


def decontaminate(rows: list[dict], test_questions: list[str], n: int = 8) -> tuple[list[dict], Counter]:
    """Drop rows whose question shares an n-gram with a test question; count the drops by kind."""
    test = _test_ngrams(test_questions, n)
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
    """Write `<task>-<view>` configs of training rows; returns the summary (with `output_dir`).

    Memory stays flat in the rows: the CoT rows are built a chunk of problems (or samples) at a
    time into a temporary spill file, the corrections are read a row group at a time and only the
    numbers of the rows kept are held (8 bytes a row), and each view is shuffled on disk
    (`_shuffled_batches`). The rows, their order and the files are those of building every row
    in memory and shuffling the list.
    """
    import numpy as np
    import pyarrow as pa

    t0 = time.time()
    if not cfg.corrections and "cot" not in cfg.views:
        raise InvalidInputError(
            "build: set `corrections` (a corrections folder or Hub id) or build only the `cot` view."
        )
    feats = training_row_features(cfg.prompt_style)
    schema = feats.arrow_schema.remove_metadata()
    corrections, where = StreamedRows([]), ""
    used = np.empty(0, np.int64)  # numbers of the correction rows kept (accepted, exact, clean)
    name = cfg.dataset_config_name
    families: dict[str, set[str]] = {}  # where rows come from -> their tasks (one family per build)
    with contextlib.ExitStack() as stack:
        if cfg.corrections:
            config = cfg.corrections_config or main_config(cfg.corrections)
            where = f"{cfg.corrections} [{config}]"
            corrections = stream_rows(cfg.corrections, config, missing_ok=True, skip_columns=_UNUSED_COLUMNS)
            used = _accepted(corrections, where)
            families[f"the corrections {where}"] = {
                task_of(c) for _, c in _each(corrections, where, used, _TASK_COLUMNS)
            }
            name = name or config
        name = name or cfg.problems.replace("/", "_")
        summary: dict[str, Any] = {"config_prefix": name, "prompt_style": cfg.prompt_style}
        out = Path(
            cfg.output_dir or f"outputs/{name}/mixture" + ("-chat" if cfg.prompt_style == "chat" else "")
        )
        spill_dir = _spill_dir(out)
        cot = stack.enter_context(_Spill(schema, spill_dir))  # gold, then sampled CoT rows
        seen: set[bytes] | None = set() if cfg.include_correct_samples else None
        if cfg.include_gold:
            tasks, no_gold = _spill_gold_rows(cfg, cot, seen)
            families[f"the problems {cfg.problems}"] = tasks
            check_task_families(families)
            if no_gold:  # CSQA: CoT rows come from correct sampled paths (include_correct_samples)
                summary["no_gold_rationale"] = no_gold
                logger.info("%d CSQA problems have no gold rationale: no gold CoT rows for them", no_gold)
        summary["gold_cot_rows"] = cot.rows
        if cfg.include_correct_samples:
            if not cfg.mistakes:
                raise InvalidInputError(
                    "build: include_correct_samples needs `mistakes` (the mistakes folder or Hub id)."
                )
            mconf = main_config(cfg.mistakes)
            mwhere = f"{cfg.mistakes} [{mconf}-samples]"
            # CSQA's sampled CoT rows are cut from the path's own text, so `completion` is read here.
            samples = stream_rows(cfg.mistakes, f"{mconf}-samples", skip_columns=("gold_solution",))
            families[f"the mistakes {mwhere}"] = {
                task_of(s) for _, s in _each(samples, mwhere, None, _TASK_COLUMNS)
            }
            check_task_families(families)
            gold_rows = cot.rows
            left_out = {"duplicates": 0, "inexact": 0}
            for _, batch in _numbered(samples, mwhere):
                extra = list(_new_sample_rows(batch.to_pylist(), seen, left_out, cfg.prompt_style))
                if extra:
                    cot.write(_record_batch(extra, feats, schema))
            summary.update(
                sample_cot_rows=cot.rows - gold_rows,
                sample_duplicates_dropped=left_out["duplicates"],
                # CSQA: correct only through the edit-distance mapping, so not training data
                sample_inexact_dropped=left_out["inexact"],
            )
        seen = None  # (the de-duplication keys are done with)
        family = check_task_families(families)
        if family == _family(CHOICE_TASK):  # (math corrections are all exact: nothing to drop)
            columns = ("corrected_steps", *_TASK_COLUMNS)
            exact = _index(i for i, c in _each(corrections, where, used, columns) if _states_gold(c))
            summary["inexact_corrections_dropped"] = len(used) - len(exact)
            used = exact
        summary["correction_rows"] = len(used)

        n_cot = cot.rows
        before = n_cot + len(used)
        cot_kept = None  # numbers of the CoT rows kept (None: all)
        if cfg.decontaminate:
            test = load_test_problems(cfg.decontaminate, cfg.decontaminate_path, cfg.decontaminate_split)
            test_family = check_task_families(
                {f"the test set {cfg.decontaminate}": {task_of(p) for p in test}}
            )
            if family and test_family and test_family != family:
                raise InvalidInputError(
                    f"build: decontaminate {cfg.decontaminate} is a {test_family} test set but the training "
                    f"rows are {family}; name the held-out set of their task ({_test_sets_of(family)})."
                )
            test_q = [p.question for p in test]
            grams = _test_ngrams(test_q, cfg.ngram)
            del test

            def clean(row: dict) -> bool:
                return not ngrams(row["question"] or "", cfg.ngram) & grams

            cot_kept = _index(i for i, r in _each_spilled(cot, ("question",)) if clean(r))
            n_cot = len(cot_kept)
            kept = _index(i for i, c in _each(corrections, where, used, ("question",)) if clean(c))
            summary["decontamination"] = {
                "test_set": cfg.decontaminate,
                "test_questions": len(test_q),
                "ngram": cfg.ngram,
                "dropped_cot_rows": cot.rows - n_cot,  # every CoT row is of kind `cot`
                "dropped_correction_rows": len(used) - len(kept),
            }
            used = kept
        if not n_cot and not (len(used) and any(v != "cot" for v in cfg.views)):
            # Before anything is written: the output folder is left as it was.
            raise InvalidInputError(f"build: no training rows: {_no_rows_reason(cfg, summary, before)}.")

        views: dict[str, dict[str, int]] = {}
        empty: list[str] = []
        # One commit for every view and the removal of the empty ones: a failed build keeps the old views.
        with ConfigGroup(out) as group:
            for view in cfg.views:
                n = n_cot if view == "cot" else n_cot + len(used)
                if not n:
                    # An earlier run's rows of this view would outlive the run this folder now describes.
                    logger.warning(
                        "view %s is empty; not written (an earlier run's %s-%s is removed)", view, name, view
                    )
                    save_dataset_config(out, f"{name}-{view}", {"train": []}, features=feats, group=group)
                    empty.append(view)
                    continue
                sources = _view_sources(
                    view, cot, cot_kept, corrections, where, used, feats, schema, cfg.prompt_style
                )
                with _Spill(schema.append(pa.field("_pos", pa.int64())), spill_dir) as spill:
                    kinds: Counter = Counter()
                    batches = _shuffled_batches(sources, _positions(n, cfg.shuffle, cfg.seed), spill, kinds)
                    save_dataset_config_stream(out, f"{name}-{view}", batches, feats, group=group)
                views[view] = {"cot": kinds["cot"], "correction": kinds["correction"], "total": n}
    if empty:
        summary["empty_views"] = empty
    summary.update(views=views, output_dir=str(out), wall_s=round(time.time() - t0, 2))
    _release()  # (before the card reads the views)
    finish(out, "mixture", cfg, summary, recipe="build")
    logger.info("mixture views: %s", views)
    return summary


# --------------------------------------------------------------------------------------------------
# Rows kept on disk while a build runs (memory flat in the rows)
# --------------------------------------------------------------------------------------------------


def _spill_dir(out: Path) -> Path:
    """Where build's spill files go: the output folder or its nearest existing parent (the disk the
    views are written to, not a RAM-backed /tmp; nothing is created there, and the files have no
    name, so a refused build leaves the folder as it was and a push never sees them)."""
    p = out.resolve()
    while not p.is_dir():
        p = p.parent
    return p


class _Spill:
    """Arrow record batches in an anonymous temporary file (`tempfile.TemporaryFile` in
    `_spill_dir`: unlinked as soon as it is made, so an exception or a kill leaves nothing behind);
    written first, then read back a batch at a time (random access by batch number)."""

    def __init__(self, schema: pa.Schema, directory: Path | None = None) -> None:
        import pyarrow as pa

        self.schema = schema
        self.rows = 0
        self.batches = 0
        self._file = tempfile.TemporaryFile(prefix="lema-build-", dir=directory)
        self._writer: Any = pa.ipc.new_file(pa.PythonFile(self._file, mode="w"), schema)
        self._reader: Any = None

    def __enter__(self) -> _Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, batch: pa.RecordBatch) -> int:
        """Append one batch; returns its number."""
        assert self._reader is None, "a spill is written, then read"
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.batches += 1
        return self.batches - 1

    def read(self, i: int) -> pa.RecordBatch:
        """Batch `i` (the first read ends the writing)."""
        import pyarrow as pa

        if self._reader is None:
            self._writer.close()
            self._file.seek(0)
            self._reader = pa.ipc.open_file(pa.PythonFile(self._file, mode="r"))
        return self._reader.get_batch(i)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for i in range(self.batches):
            yield self.read(i)

    def close(self) -> None:
        self._reader = None
        self._file.close()


def _record_batch(rows: list[dict], feats: Features, schema: pa.Schema) -> pa.RecordBatch:
    """Training rows as Arrow, holding the values the writer stores for them (`datasets` converts a
    value of another type, e.g. an int `problem_id`, which Arrow alone refuses)."""
    import pyarrow as pa

    try:
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        import datasets

        table = datasets.Dataset.from_list(conform(rows, feats), features=feats).data.table
        return table.cast(schema).combine_chunks().to_batches()[0]


def _index(numbers: Iterable[int]) -> np.ndarray:
    """Row numbers as an int64 array (8 bytes a row)."""
    import numpy as np

    return np.array(array("q", numbers), dtype=np.int64)


def _numbered(rows: StreamedRows, where: str) -> Iterator[tuple[int, pa.Table]]:
    """(number of its first row, batch) of each batch of `rows`; an unreadable file is one line."""
    import pyarrow as pa

    first, batches = 0, rows.batches(_BATCH_ROWS)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except pa.ArrowException as exc:
            raise InvalidInputError(f"{where}: a parquet file cannot be read: {exc}") from exc
        yield first, batch
        first += batch.num_rows
        del batch
        _release()


def _release() -> None:
    """Hand the memory Arrow freed back to the OS: its default pool (mimalloc) otherwise keeps
    what each batch read or built, so the process grows with the number of batches."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _among(numbers: np.ndarray | None, first: int, n: int) -> np.ndarray:
    """Positions within rows [first, first + n) of the (sorted) row `numbers` there (None: all)."""
    import numpy as np

    if numbers is None:
        return np.arange(n, dtype=np.int64)
    lo, hi = np.searchsorted(numbers, [first, first + n])
    return numbers[lo:hi] - first


def _rows_at(batch: Any, at: np.ndarray, columns: tuple[str, ...] | None = None) -> list[dict]:
    """Rows `at` of an Arrow batch as dicts (of `columns` only, those it has)."""
    import pyarrow as pa

    if columns is not None:
        names = [c for c in columns if c in batch.schema.names]
        if not names:
            return [{} for _ in range(len(at))]
        batch = batch.select(names)
    return batch.take(pa.array(at, pa.int64())).to_pylist()


def _each(
    rows: StreamedRows, where: str, among: np.ndarray | None, columns: tuple[str, ...]
) -> Iterator[tuple[int, dict]]:
    """(row number, dict of its `columns`) of the rows numbered in `among` (None: all), in order."""
    for first, batch in _numbered(rows, where):
        at = _among(among, first, batch.num_rows)
        if len(at):
            yield from zip((at + first).tolist(), _rows_at(batch, at, columns))


def _each_spilled(spill: _Spill, columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """(row number, dict of its `columns`) of every row of a spill, in order."""
    import numpy as np

    first = 0
    for batch in spill:
        at = np.arange(batch.num_rows, dtype=np.int64)
        yield from zip((at + first).tolist(), _rows_at(batch, at, columns))
        first += batch.num_rows


def _accepted(corrections: StreamedRows, where: str) -> np.ndarray:
    """Numbers of the accepted rows (all of them without an `accepted` column; null: not accepted)."""
    import numpy as np
    import pyarrow.compute as pc

    if "accepted" not in corrections.schema.names:
        return np.arange(len(corrections), dtype=np.int64)
    parts = [np.empty(0, np.int64)]
    for first, batch in _numbered(corrections, where):
        accepted = pc.fill_null(pc.equal(batch.column("accepted"), True), False)
        parts.append(pc.indices_nonzero(accepted).to_numpy().astype(np.int64) + first)
    return np.concatenate(parts)


def _spill_gold_rows(cfg: BuildConfig, cot: _Spill, seen: set[bytes] | None) -> tuple[set[str], int]:
    """Spill the gold CoT rows of the problems (read one at a time), `_BATCH_ROWS` problems at a
    time; `seen` gets their de-duplication keys. Returns (the problems' tasks, how many are CSQA)."""
    feats = training_row_features(cfg.prompt_style)
    tasks: set[str] = set()
    no_gold = 0
    chunk: list[Any] = []

    def spill() -> None:
        rows = gold_cot_rows(chunk, cfg.prompt_style)
        if seen is not None:
            seen.update(_dedup_key(r["problem_id"], _text(r["completion"])) for r in rows)
        if rows:
            cot.write(_record_batch(rows, feats, cot.schema))
        chunk.clear()

    for p in iter_problems(cfg):
        task = task_of(p)
        tasks.add(task)
        no_gold += task == CHOICE_TASK
        chunk.append(p)
        if len(chunk) == _BATCH_ROWS:
            spill()
    spill()
    return tasks, no_gold


def _view_sources(
    view: str,
    cot: _Spill,
    cot_kept: np.ndarray | None,
    corrections: StreamedRows,
    where: str,
    used: np.ndarray,
    feats: Features,
    schema: pa.Schema,
    style: str,
) -> Iterator[pa.RecordBatch]:
    """The rows of `view_rows(view, ...)` in its order, as Arrow batches: the CoT rows kept, then
    (but for `cot`) each kept correction as this view's row."""
    import pyarrow as pa

    first = 0
    for batch in cot:
        n = batch.num_rows
        if cot_kept is not None:
            batch = batch.take(pa.array(_among(cot_kept, first, n)))
        first += n
        yield batch
    if view == "cot":
        return
    for first, batch in _numbered(corrections, where):
        at = _among(used, first, batch.num_rows)
        if len(at):
            rows = [_correction_view_row(view, c, style) for c in _rows_at(batch, at)]
            yield _record_batch(rows, feats, schema)


def _positions(n: int, shuffle: bool, seed: int) -> np.ndarray:
    """The output position of each of a view's `n` rows: the order `random.Random(seed).shuffle`
    gives the list of rows. The row numbers are shuffled as an `array('q')` (`shuffle` only
    indexes and swaps: the same order as a list's, in 8 bytes a row), then inverted."""
    import numpy as np

    order = array("q", range(n))
    if shuffle:
        random.Random(seed).shuffle(order)
    pos = np.empty(n, np.int64)
    pos[np.frombuffer(order, dtype=np.int64)] = np.arange(n, dtype=np.int64)
    return pos


def _shuffled_batches(
    sources: Iterable[pa.RecordBatch], pos: np.ndarray, spill: _Spill, kinds: Counter
) -> Iterator[list[dict]]:
    """The rows of `sources` (in their order; row j goes to position `pos[j]`) as the output's
    batches of `_BATCH_ROWS` rows, by position. Pass 1 spills each source batch cut by output
    batch; pass 2 reads each output batch's pieces, orders them by position and yields them as
    dicts. `kinds` counts the rows by `kind`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    size = _BATCH_ROWS
    pieces = [array("q") for _ in range(-(-len(pos) // size))]  # spill batches of each output batch
    j = 0
    for batch in sources:
        n = batch.num_rows
        if not n:
            continue
        where = pos[j : j + n]
        j += n
        at = np.argsort(where, kind="stable")
        where = where[at]
        batch = batch.take(pa.array(at))
        batch = pa.RecordBatch.from_arrays([*batch.columns, pa.array(where)], schema=spill.schema)
        out = where // size
        cuts = [0, *(np.flatnonzero(np.diff(out)) + 1).tolist(), n]
        for lo, hi in zip(cuts, cuts[1:]):
            pieces[int(out[lo])].append(spill.write(batch.slice(lo, hi - lo)))
    assert j == len(pos), (j, len(pos))  # every row of the view has its place
    for k, numbers in enumerate(pieces):
        table = pa.Table.from_batches([spill.read(i) for i in numbers], schema=spill.schema)
        rows = table.take(pc.sort_indices(table.column("_pos"))).drop_columns(["_pos"]).to_pylist()
        assert len(rows) == min(size, len(pos) - k * size), (k, len(rows))
        del table
        kinds.update(r["kind"] for r in rows)
        yield rows
        del rows
        _release()  # (what the writer freed too)


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
