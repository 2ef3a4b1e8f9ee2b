"""Problem sources -> one ``Problem`` schema.

Sources: GSM8K (Hub ``openai/gsm8k`` config ``main``, or a local jsonl in the original format),
MATH (Hub ``EleutherAI/hendrycks_math``, every subject config, or a local jsonl in the original
format), MATH-500 (Hub ``HuggingFaceH4/MATH-500`` or local), any Hub dataset / local
json / jsonl / parquet file with a column map, and the bundled sample (package data).

``problem_id`` is stable across runs and machines:
``gsm8k/<split>/<index>``, ``sample/<split>/<index>``, ``math500/<unique_id without .json>``,
``math/<split>/<12 hex of sha256(problem)>`` (the Hub's subject configs and the original files
order MATH differently, so MATH keys on content), ``<name>/<split>/<index>`` for other datasets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from lema_hub.artifacts import load_artifact
from lema_hub.errors import InvalidInputError
from lema_hub.formats import gsm8k_answer, last_boxed
from lema_hub.schema import CHOICE_TASK, CHOICE_TASKS, NUMERIC_TASKS, TASKS

logger = logging.getLogger(__name__)

SAMPLE_SPLITS = ("train", "test")

_QUESTION_COLUMNS = ("question", "problem", "query", "prompt", "instruction", "input")
_SOLUTION_COLUMNS = ("solution", "answer", "gold_solution", "rationale", "response", "output")
_ANSWER_COLUMNS = ("gold_answer", "final_answer", "answer", "target", "label")


class ProblemSourceError(InvalidInputError):
    """A problem source could not be read (names the source and what is wrong); a ValueError."""


@dataclass
class Problem:
    problem_id: str
    source: str
    split: str
    question: str
    gold_solution: str
    gold_answer: str
    level: int | None = None
    subject: str | None = None
    candidates: list[str] | None = None  # multiple-choice tasks (CSQA): the answer choices

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Problem:
        """Build from a row; extra keys (e.g. Sample fields) are ignored."""
        names = {f.name for f in fields(cls)}
        missing = [
            n
            for n in ("problem_id", "source", "split", "question", "gold_solution", "gold_answer")
            if n not in d
        ]
        if missing:
            raise InvalidInputError(f"row is missing Problem fields {missing}")
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class ProblemArgs:
    """Where the problems come from (a mixin: recipe configs inherit these fields)."""

    problems: str = field(
        default="sample",
        metadata={
            "help": "Problem source: sample | gsm8k | math | math500 | svamp | asdiv | csqa | csqa_sample | a Hub dataset id | a local .json/.jsonl/.parquet file or lema_hub folder."
        },
    )
    """sample | gsm8k | math | math500 | a Hub dataset id | a local .json/.jsonl/.parquet path"""
    problems_split: str = field(default="train", metadata={"help": "Split of the problem source."})
    """split to read; for the bundled sample: "train" (collection) or "test" (held out)"""
    problems_path: str | None = field(
        default=None, metadata={"help": "Local file in the source's original format, instead of the Hub."}
    )
    """local file in the source's original format, instead of the Hub"""
    problems_subset: str | None = field(default=None, metadata={"help": "Hub dataset config (subset) name."})
    """Hub config name (GSM8K: "main"; MATH: one subject instead of all)"""
    question_column: str | None = field(
        default=None, metadata={"help": "Question column of a generic dataset (auto-detected if unset)."}
    )
    solution_column: str | None = field(
        default=None, metadata={"help": "Solution column of a generic dataset (auto-detected if unset)."}
    )
    answer_column: str | None = field(
        default=None,
        metadata={
            "help": "Answer column of a generic dataset (default: from the solution's '#### N' or last \\\\boxed{})."
        },
    )
    problems_limit: int | None = field(default=None, metadata={"help": "Use only the first N problems."})
    """first N problems (before sharding)"""
    shard: str | None = field(
        default=None,
        metadata={"help": "'i/n': process the i-th (0-based) of n deterministic shards of the problems."},
    )
    """"i/n": the deterministic i-th (0-based) of n interleaved shards"""


# -------------------------------------------------------------------------------------- helpers
def _read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local .jsonl / .json / .parquet file (an empty or unreadable file is an error)."""
    p = Path(path)
    if not p.is_file():
        raise ProblemSourceError(f"problems file {str(path)!r} does not exist")
    try:
        rows = _read_file_rows(p)
    except (OSError, UnicodeDecodeError) as e:
        raise ProblemSourceError(f"problems file {str(path)!r} cannot be read: {e}") from e
    if not rows:
        raise ProblemSourceError(f"problems file {str(path)!r} has no rows")
    return rows


def _jsonl_rows(p: Path) -> Iterator[dict[str, Any]]:
    """The rows of a .jsonl file, a line at a time (blank lines skipped)."""
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ProblemSourceError(f"{p.name}, line {n}: not valid JSON ({e.msg})") from e


def _read_file_rows(p: Path) -> list[dict[str, Any]]:
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return list(_jsonl_rows(p))
    if suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:  # JSON lines named .json
            return _read_rows_jsonl_named_json(p)
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ProblemSourceError(f"{p.name}: expected a list of rows or {{'<key>': [rows]}}")
            data = lists[0]
        if not isinstance(data, list):
            raise ProblemSourceError(f"{p.name}: expected a list of rows")
        return data
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(p).to_pylist()
        except pa.ArrowException as e:
            raise ProblemSourceError(f"problems file {str(p)!r} is not a readable parquet file: {e}") from e
    raise ProblemSourceError(f"{p.name}: unsupported file type {suffix!r} (use .jsonl, .json or .parquet)")


def _read_rows_jsonl_named_json(p: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ProblemSourceError(f"{p.name}, line {n}: not valid JSON ({e.msg})") from e
    return rows


def _hub_rows(repo_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of a Hub dataset split via ``datasets.load_dataset``."""
    import datasets

    if Path(repo_id).is_dir():  # a Hub-layout folder written by a lema_hub stage
        return [dict(r) for r in load_artifact(repo_id, config or "default", split)]
    try:
        ds = datasets.load_dataset(repo_id, config, split=split)
    except Exception as e:
        raise ProblemSourceError(
            f"could not load {repo_id!r} (config {config!r}, split {split!r}) from the Hub: {e}. "
            "Offline? Pass a local file with --problems_path."
        ) from e
    return [dict(r) for r in ds]


def _require(row: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise ProblemSourceError(f"{where}: missing field(s) {missing}; has {sorted(row)}")


def _level(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.search(r"\d+", value)
        return int(m.group(0)) if m else None
    return None


def content_id(text: str) -> str:
    """12 hex characters of sha256 of the whitespace-normalized text."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:12]


# -------------------------------------------------------------------------------------- sources
def gsm8k_problems(rows: list[dict[str, Any]], split: str, source: str = "gsm8k") -> list[Problem]:
    """GSM8K original-format rows (``question``, ``answer`` ending ``#### N``) -> Problems."""
    return list(_gsm8k_problems(rows, split, source))


def _gsm8k_problems(rows: Iterable[dict[str, Any]], split: str, source: str) -> Iterator[Problem]:
    for i, row in enumerate(rows):
        where = f"{source}/{split} row {i}"
        _require(row, ("question", "answer"), where)
        if "####" not in row["answer"]:
            raise ProblemSourceError(f"{where}: answer has no '#### <number>' line")
        answer = gsm8k_answer(row["answer"].rsplit("####", 1)[1])
        yield Problem(
            problem_id=f"{source}/{split}/{i}",
            source=source,
            split=split,
            question=row["question"],
            gold_solution=row["answer"],
            gold_answer=answer,
        )


def math_problems(rows: list[dict[str, Any]], split: str) -> list[Problem]:
    """MATH original-format rows (``problem``, ``level`` "Level 3", ``type``, ``solution``) -> Problems."""
    out = []
    for i, row in enumerate(rows):
        where = f"math/{split} row {i}"
        _require(row, ("problem", "solution"), where)
        answer = last_boxed(row["solution"])
        if not answer:
            raise ProblemSourceError(f"{where}: solution has no \\boxed{{...}} answer")
        out.append(
            Problem(
                problem_id=f"math/{split}/{content_id(row['problem'])}",
                source="math",
                split=split,
                question=row["problem"],
                gold_solution=row["solution"],
                gold_answer=answer,
                level=_level(row.get("level")),
                subject=row.get("type") or row.get("subject"),
            )
        )
    return out


def math500_problems(rows: list[dict[str, Any]], split: str = "test") -> list[Problem]:
    """MATH-500 rows (``problem``, ``solution``, ``answer``, ``subject``, ``level``, ``unique_id``)."""
    out = []
    for i, row in enumerate(rows):
        where = f"math500/{split} row {i}"
        _require(row, ("problem", "solution", "answer"), where)
        uid = row.get("unique_id")
        key = re.sub(r"\.json$", "", uid) if uid else f"{split}/{content_id(row['problem'])}"
        out.append(
            Problem(
                problem_id=f"math500/{key}",
                source="math500",
                split=split,
                question=row["problem"],
                gold_solution=row["solution"],
                gold_answer=str(row["answer"]).strip(),
                level=_level(row.get("level")),
                subject=row.get("subject"),
            )
        )
    return out


# ------------------------------------------------------------------- evaluation-only: SVAMP, ASDiv
# SVAMP and ASDiv are evaluation-only tasks in the paper (models trained on GSM8K data, graded as
# GSM8K numbers with the GSM8K CoT prompt). Our choices, where the paper is silent:
# * the problem text is ``Body + " " + Question`` (ASDiv: ``body + " " + question``), each stripped,
#   joined by one space and nothing else. Many SVAMP Bodies end mid-sentence ("If he had $ 4 at the
#   start"); we add no full stop or comma, so the text is the dataset's own words (the common
#   harness convention, e.g. the ``question_concat`` column of ChilleD/SVAMP).
# * ASDiv keeps the paper's 2,084 single-number answers (ASDIV_NUMERIC below); ``9 (apples)`` -> ``9``.
#   The rest (names, yes/no, ratios, ``;`` multi-answers) are dropped and counted (load_report).
# * ids are the datasets' own (``svamp/chal-1``, ``asdiv/nluds-0001``), so Hub and local copies agree.
ASDIV_NUMERIC = re.compile(r"^-?\d+(\.\d+)?(\s+\([^()]*\))?$")
SVAMP_TYPE_FIXES = {"Common-Divison": "Common-Division"}  # one typo in the original file

_LOAD_REPORTS: dict[str, dict[str, Any]] = {}


def load_report(source: str) -> dict[str, Any] | None:
    """What the last load of an evaluation-only ``source`` kept and dropped (None if nothing to report)."""
    return _LOAD_REPORTS.get(source)


def _number_text(value: Any) -> str:
    """A gold number as text: ``51.0`` -> ``51``, ``2.5`` -> ``2.5``, ``"1,000"`` -> ``1000``."""
    if isinstance(value, bool):
        raise InvalidInputError(f"not a number: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"not a finite number: {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    text = gsm8k_answer(str(value))
    if not re.fullmatch(r"-?\d+(\.\d+)?", text):
        raise InvalidInputError(f"not a number: {value!r}")
    return text


def _join_problem(body: Any, question: Any) -> str:
    return " ".join(t for t in (str(body or "").strip(), str(question or "").strip()) if t)


def svamp_problems(rows: list[dict[str, Any]], split: str, source: str = "svamp") -> list[Problem]:
    """SVAMP rows (``ID``, ``Body``, ``Question``, ``Equation``, ``Answer``, ``Type``) -> Problems."""
    out = []
    for i, row in enumerate(rows):
        where = f"{source}/{split} row {i}"
        _require(row, ("Body", "Question", "Answer"), where)
        try:
            answer = _number_text(row["Answer"])
        except ValueError as e:
            raise ProblemSourceError(f"{where}: Answer {row['Answer']!r} is not a number ({e})") from e
        key = str(row.get("ID") or f"{split}/{i}")
        kind = row.get("Type")
        out.append(
            Problem(
                problem_id=f"{source}/{key}",
                source=source,
                split=split,
                question=_join_problem(row["Body"], row["Question"]),
                gold_solution=str(row.get("Equation") or "").strip(),
                gold_answer=answer,
                subject=SVAMP_TYPE_FIXES.get(kind, kind) if kind else None,
            )
        )
    return out


def asdiv_problems(rows: list[dict[str, Any]], split: str, source: str = "asdiv") -> list[Problem]:
    """ASDiv rows (``body``, ``question``, ``answer`` like ``9 (apples)``, ``formula``, ``grade``) -> Problems.

    Only single-number answers are kept (the paper's 2,084 of 2,305); how many were dropped is
    logged and kept in ``load_report("asdiv")``.
    """
    out = []
    dropped: list[str] = []
    for i, row in enumerate(rows):
        where = f"{source}/{split} row {i}"
        _require(row, ("body", "question", "answer"), where)
        raw = str(row["answer"]).strip()
        if not ASDIV_NUMERIC.match(raw):
            dropped.append(raw)
            continue
        key = str(row.get("id") or f"{split}/{i}")
        out.append(
            Problem(
                problem_id=f"{source}/{key}",
                source=source,
                split=split,
                question=_join_problem(row["body"], row["question"]),
                gold_solution=str(row.get("formula") or "").strip(),
                gold_answer=raw.split()[0],
                level=_level(row.get("grade")),
                subject=row.get("solution_type"),
            )
        )
    _LOAD_REPORTS[source] = {
        "source": source,
        "rows": len(rows),
        "kept": len(out),
        "dropped_non_numeric": len(dropped),
        "rule": f"answers matching {ASDIV_NUMERIC.pattern} (one number, optional unit in parentheses)",
        "dropped_examples": sorted(set(dropped))[:5],
    }
    if dropped:
        logger.warning(
            "%s/%s: dropped %d of %d rows whose answer is not a single number (kept %d), e.g. %s",
            source,
            split,
            len(dropped),
            len(rows),
            len(out),
            ", ".join(repr(d) for d in sorted(set(dropped))[:3]),
        )
    return out


# name -> (Hub id, Hub config, loader); `problems: <name>` or `problems: <Hub id>` use the loader.
EVAL_ONLY_SOURCES: dict[str, tuple[str, str | None, Any]] = {
    "svamp": (TASKS["svamp"].hub_id, None, svamp_problems),
    "asdiv": (TASKS["asdiv"].hub_id, None, asdiv_problems),
}


def eval_only_source(src: str) -> str | None:
    """The evaluation-only source a ``problems`` value names (``svamp``, ``ChilleD/SVAMP``, ...), else None."""
    for name, (hub_id, _, _) in EVAL_ONLY_SOURCES.items():
        if src.lower() in (name, hub_id.lower()):
            return name
    return None


def load_eval_only(name: str, args: ProblemArgs) -> list[Problem]:
    """SVAMP / ASDiv from ``problems_path`` or the Hub (Hub SVAMP: ``problems_split: train+test`` = all 1,000)."""
    hub_id, config, loader = EVAL_ONLY_SOURCES[name]
    split = args.problems_split
    if args.problems_path:
        rows = _read_rows(args.problems_path)
    else:
        rows = _hub_rows(hub_id, args.problems_subset or config, split)
    return loader(rows, split, source=name)


def _pick(
    row: dict[str, Any], given: str | None, candidates: tuple[str, ...], what: str, where: str
) -> str | None:
    if given:
        if given not in row:
            raise ProblemSourceError(f"{where}: {what} column {given!r} not found; columns are {sorted(row)}")
        return given
    for c in candidates:
        if c in row:
            return c
    return None


def mapped_problems(
    rows: list[dict[str, Any]],
    name: str,
    split: str,
    question_column: str | None = None,
    solution_column: str | None = None,
    answer_column: str | None = None,
) -> list[Problem]:
    """Rows of any dataset -> Problems through a column map (auto-detected where not given).

    The answer comes from ``answer_column`` when there is one, else from the solution
    (``#### N`` or the last ``\\boxed{}``).
    """
    if not rows:
        return []
    where = f"{name}/{split}"
    first = rows[0]
    q_col = _pick(first, question_column, _QUESTION_COLUMNS, "question", where)
    if q_col is None:
        raise ProblemSourceError(
            f"{where}: no question column; set question_column (columns: {sorted(first)})"
        )
    s_col = _pick(first, solution_column, _SOLUTION_COLUMNS, "solution", where)
    a_col = _pick(first, answer_column, tuple(c for c in _ANSWER_COLUMNS if c != s_col), "answer", where)
    if s_col is None and a_col is None:
        raise ProblemSourceError(
            f"{where}: no solution or answer column; set solution_column / answer_column"
        )
    out = []
    for i, row in enumerate(rows):
        solution = str(row.get(s_col) or "") if s_col else ""
        if a_col and row.get(a_col) not in (None, ""):
            answer = str(row[a_col]).strip()
            if "####" in answer:
                answer = gsm8k_answer(answer.rsplit("####", 1)[1])
        elif "####" in solution:
            answer = gsm8k_answer(solution.rsplit("####", 1)[1])
        else:
            answer = last_boxed(solution) or ""
        if not answer:
            raise ProblemSourceError(
                f"{where} row {i}: no gold answer (answer column empty, none in the solution)"
            )
        # Rows that are already Problems (e.g. evolved problems read back) keep their identity,
        # so caches and joins keyed on problem_id never mix them up.
        out.append(
            Problem(
                problem_id=str(row.get("problem_id") or f"{name}/{split}/{i}"),
                source=str(row.get("source") or name),
                split=str(row.get("split") or split),
                question=str(row[q_col]),
                gold_solution=solution,
                gold_answer=answer,
                level=_level(row.get("level")),
                subject=row.get("subject") or row.get("type"),
            )
        )
    return out


# --------------------------------------------------------------------------- CommonsenseQA (choices)
# CSQA rows come as `tau/commonsense_qa` rows (`id`, `question`, `choices` {label, text}, `answerKey`)
# or as the paper's evaluation file (`prompt`, `answer`, `candidates`). gold_answer is the gold
# candidate's text; CSQA has no gold rationale, so gold_solution is empty.
CSQA_SOURCES = ("csqa", TASKS["csqa"].hub_id)


def csqa_problems(
    rows: list[dict[str, Any]], split: str, source: str = "csqa", where: str | None = None
) -> list[Problem]:
    """CSQA rows (the Hub's shape or the paper's `csqa_dev.jsonl` shape) -> Problems with candidates.

    A bad row is a ProblemSourceError naming `where` (the file; default `<source>/<split>`), the row
    and the value."""
    from lema_hub import csqa

    if not rows:
        return []
    where = where or f"{source}/{split}"
    first = rows[0] if isinstance(rows[0], dict) else {}
    try:
        if "choices" in first:
            items = csqa.hub_items(rows, split)
            ids = [str(r.get("id") or i) for i, r in enumerate(rows)]
        elif "candidates" in first and "prompt" in first:
            items = csqa.paper_items(rows)
            ids = [str(i) for i in range(len(rows))]
        else:
            raise ProblemSourceError(
                f"{where}: rows need `choices` + `answerKey` (the Hub's rows) or `prompt` + "
                f"`candidates` + `answer` (the paper's csqa_dev.jsonl); columns are {sorted(first)}"
            )
    except ProblemSourceError:
        raise
    except ValueError as e:
        raise ProblemSourceError(f"{where}: {e}") from e
    return [
        Problem(
            problem_id=f"{source}/{split}/{key}",
            source=source,
            split=split,
            question=item.question,
            gold_solution="",
            gold_answer=item.answer,
            candidates=list(item.candidates),
        )
        for key, item in zip(ids, items)
    ]


def looks_like_csqa(row: Any) -> bool:
    """Whether a row is a CSQA row (the Hub's `choices` + `answerKey` or the paper's `prompt` + `candidates`)."""
    if not isinstance(row, dict):
        return False
    return {"choices", "answerKey"} <= row.keys() or {"prompt", "candidates"} <= row.keys()


def load_csqa(args: ProblemArgs) -> list[Problem]:
    """CSQA from ``problems_path`` (either row shape) or the Hub (``tau/commonsense_qa``, train / validation)."""
    split = args.problems_split
    if args.problems_path:
        return csqa_problems(_read_rows(args.problems_path), split, where=str(args.problems_path))
    rows = _hub_rows(TASKS["csqa"].hub_id, args.problems_subset, split)
    return csqa_problems(rows, split, where=f"{TASKS['csqa'].hub_id} ({split})")


def _bundled_rows(name: str, split: str) -> list[dict[str, Any]]:
    if split not in SAMPLE_SPLITS:
        raise ProblemSourceError(f"bundled sample split must be one of {SAMPLE_SPLITS}, got {split!r}")
    res = resources.files("lema_hub").joinpath("data", f"{name}_{split}.jsonl")
    if not res.is_file():
        raise ProblemSourceError(f"bundled sample file data/{name}_{split}.jsonl is missing from the package")
    return [json.loads(line) for line in res.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_csqa_sample(split: str = "train") -> list[Problem]:
    """The bundled CSQA sample (``lema_hub/data/csqa_sample_{split}.jsonl``, tau/commonsense_qa rows)."""
    return csqa_problems(_bundled_rows("csqa_sample", split), split, source="csqa_sample")


def load_sample(split: str = "train") -> list[Problem]:
    """The bundled sample (package data ``lema_hub/data/sample_{split}.jsonl``, GSM8K format)."""
    return gsm8k_problems(_bundled_rows("sample", split), split, source="sample")


def _dataset_name(spec: str) -> str:
    """A stable short name for a Hub id or local file (no machine-specific path)."""
    base = Path(spec).name if Path(spec).suffix else spec.split("/")[-1]
    stem = re.sub(r"\.(jsonl|json|parquet)$", "", base, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-").lower() or "dataset"


def parse_shard(shard: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), 0 <= i < n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise InvalidInputError(f"shard must be 'i/n' with 0 <= i < n, got {shard!r}")
    return int(m.group(1)), int(m.group(2))


def load_problems(args: ProblemArgs) -> list[Problem]:
    """Problems for a run: the source, then ``problems_limit``, then ``shard``."""
    src, split = args.problems, args.problems_split
    if src in ("sample", "csqa_sample") and args.problems_path:
        task, test_set = ("csqa", "csqa_dev") if src == "csqa_sample" else ("gsm8k", "gsm8k_test")
        raise ProblemSourceError(
            f"problems {src!r} is a bundled sample and takes no path (got {args.problems_path!r}); "
            f"for that file use --problems {task} --problems_path FILE "
            f"(build: --decontaminate {test_set} --decontaminate_path FILE)"
        )
    if src == "sample":
        problems = load_sample(split)
    elif src == "csqa_sample":
        problems = load_csqa_sample(split)
    elif src.lower() in (s.lower() for s in CSQA_SOURCES):
        problems = load_csqa(args)
    elif src == "gsm8k":
        rows = (
            _read_rows(args.problems_path)
            if args.problems_path
            else _hub_rows(TASKS["gsm8k"].hub_id, args.problems_subset or TASKS["gsm8k"].configs[0], split)
        )
        problems = gsm8k_problems(rows, split)
    elif src == "math":
        if args.problems_path:
            rows = _read_rows(args.problems_path)
        else:
            configs = [args.problems_subset] if args.problems_subset else list(TASKS["math"].configs)
            rows = [r for c in configs for r in _hub_rows(TASKS["math"].hub_id, c, split)]
        problems = math_problems(rows, split)
    elif src == "math500":
        rows = (
            _read_rows(args.problems_path)
            if args.problems_path
            else _hub_rows(TASKS["math500"].hub_id, None, split)
        )
        problems = math500_problems(rows, split)
    elif eval_only_source(src):
        problems = load_eval_only(eval_only_source(src), args)
    else:
        is_file = Path(src).suffix.lower() in (".json", ".jsonl", ".parquet") or Path(src).is_file()
        rows = _read_rows(src) if is_file else _hub_rows(src, args.problems_subset, split)
        if looks_like_csqa(rows[0] if rows else None):
            raise ProblemSourceError(
                f"{src} holds CommonsenseQA rows: use --problems csqa --problems_path FILE "
                "(build: --decontaminate csqa_dev --decontaminate_path FILE)"
            )
        problems = mapped_problems(
            rows,
            _dataset_name(src),
            split,
            args.question_column,
            args.solution_column,
            args.answer_column,
        )
    if args.problems_limit is not None:
        if args.problems_limit < 0:
            raise InvalidInputError(f"problems_limit must be >= 0, got {args.problems_limit}")
        problems = problems[: args.problems_limit]
    if args.shard:
        i, n = parse_shard(args.shard)
        problems = problems[i::n]
    return problems


def iter_problems(args: ProblemArgs) -> Iterator[Problem]:
    """`load_problems`' problems one at a time. A local GSM8K .jsonl file is read a line at a
    time (memory flat in the problems); every row is still parsed and checked, so a bad row past
    ``problems_limit`` is the same error. Other sources are loaded whole, then yielded."""
    path = Path(args.problems_path) if args.problems_path else None
    limit = args.problems_limit
    if args.problems != "gsm8k" or path is None or path.suffix.lower() != ".jsonl" or not path.is_file():
        yield from load_problems(args)
        return
    if limit is not None and limit <= 0:  # (0: an empty file is still an error, as there)
        yield from load_problems(args)
        return
    try:
        i, n = parse_shard(args.shard) if args.shard else (0, 1)
    except InvalidInputError:  # its error, after the file's own (as there)
        yield from load_problems(args)
        return
    seen = False
    try:
        for k, problem in enumerate(_gsm8k_problems(_jsonl_rows(path), args.problems_split, "gsm8k")):
            seen = True
            if (limit is None or k < limit) and k % n == i:
                yield problem
    except (OSError, UnicodeDecodeError) as e:
        raise ProblemSourceError(f"problems file {str(path)!r} cannot be read: {e}") from e
    if not seen:
        raise ProblemSourceError(f"problems file {str(path)!r} has no rows")


def task_of(problem_or_source: Problem | dict | str) -> str:
    """``"gsm8k"`` (numeric answers: GSM8K, the sample), ``"math"`` (LaTeX answers) or ``"csqa"``
    (multiple choice: CSQA, the CSQA sample, any row with ``candidates``).

    For other datasets a Problem / row decides by its gold answer (a plain number -> gsm8k);
    a bare unknown source name -> "math" (math-verify also handles numbers).
    """
    if isinstance(problem_or_source, str):
        s = problem_or_source.lower()
        if s in CHOICE_TASKS or s.startswith(CHOICE_TASK) or s == TASKS[CHOICE_TASK].hub_id:
            return CHOICE_TASK
        if s in NUMERIC_TASKS or "gsm8k" in s or s.startswith("sample"):
            return "gsm8k"
        return "math"
    d = problem_or_source.to_dict() if isinstance(problem_or_source, Problem) else problem_or_source
    source = str(d.get("source", "")).lower()
    if d.get("candidates") or source in CHOICE_TASKS:
        return CHOICE_TASK
    if source in NUMERIC_TASKS or "gsm8k" in source:
        return "gsm8k"
    if source in ("math", "math500"):
        return "math"
    answer = str(d.get("gold_answer", "")).replace(",", "").strip()
    return "gsm8k" if re.fullmatch(r"-?\d+(\.\d+)?", answer) else "math"
