"""Grading completions made elsewhere: read a predictions file and match its rows to the problems."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lema_hub.errors import InvalidInputError
from lema_hub.problems import Problem

# ---------------------------------------------------------------------------------------------
# Predictions files
# ---------------------------------------------------------------------------------------------


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json (list of objects) or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file {path} does not exist.")
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise InvalidInputError(f"{path}:{i} is not valid JSON: {exc}") from None
        return rows
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise InvalidInputError(f"{path} must hold a JSON list of objects.")
        return data
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise InvalidInputError(f"Predictions file {path} must be .jsonl, .json or .parquet.")


def _squash_spaces(text: str) -> str:
    return " ".join(str(text).split())


_QUESTION_IN_PROMPT = re.compile(r"Question:\s*(.*?)\s*\nAnswer:", re.S)


def question_in_prompt(prompt: str) -> str:
    """The question inside a prompt: the paper's CSQA prompt (question then candidates), a LeMa CoT
    prompt (`Question: ...` / `Answer:`), else the prompt itself."""
    from lema_hub.csqa import parse_csqa_prompt

    try:  # a prompt written without its final newline is still the paper's
        return parse_csqa_prompt(prompt if prompt.endswith("\n") else prompt + "\n")[0]
    except ValueError:
        pass
    m = _QUESTION_IN_PROMPT.search(prompt)
    return m.group(1) if m else prompt


def match_predictions(
    problems: Sequence[Problem], rows: Sequence[dict[str, Any]], column: str
) -> list[list[str]]:
    """Completions per problem (several rows per problem = several samples).

    Rows are matched by `problem_id`, else `question`, else the question inside a LeMa CoT or CSQA
    `prompt` (`question_in_prompt`), else by position (then the file must have exactly one row per
    problem). Rows matching no problem (e.g. outside `problems_limit`) are ignored; a problem without
    a completion is an error.
    """
    if not rows:
        raise InvalidInputError("The predictions file is empty.")
    if column not in rows[0]:
        raise InvalidInputError(f"Predictions have no column {column!r} (columns: {', '.join(rows[0])}).")
    out: list[list[str]] = [[] for _ in problems]
    cols = set(rows[0])
    if "problem_id" in cols:
        index = {p.problem_id: [i] for i, p in enumerate(problems)}
        keys = [str(r["problem_id"]) for r in rows]
    elif "question" in cols or "prompt" in cols:
        index = defaultdict(list)
        for i, p in enumerate(problems):
            index[_squash_spaces(p.question)].append(i)
        keys = []
        for r in rows:
            if "question" in cols:
                keys.append(_squash_spaces(r["question"]))
            else:
                keys.append(_squash_spaces(question_in_prompt(str(r["prompt"]))))
    else:
        if len(rows) != len(problems):
            raise InvalidInputError(
                f"Predictions have {len(rows)} rows for {len(problems)} problems and no problem_id/question/prompt "
                "column to match them by."
            )
        return [[_completion_text(r, column)] for r in rows]
    for key, row in zip(keys, rows):
        targets = index.get(key)
        if targets:
            # Duplicate questions: give each row to the least-served problem with that text.
            i = min(targets, key=lambda t: len(out[t]))
            out[i].append(_completion_text(row, column))
    missing = [problems[i].problem_id for i, c in enumerate(out) if not c]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} of {len(problems)} problems have no prediction (first: {', '.join(missing[:3])})."
        )
    return out


def _completion_text(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if isinstance(value, list):  # a conversational completion: [{"role": "assistant", "content": ...}]
        value = "".join(m.get("content", "") for m in value if isinstance(m, dict))
    return "" if value is None else str(value)
