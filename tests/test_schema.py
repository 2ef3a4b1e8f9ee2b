"""lema_hub.schema owns the vocabulary the stages share: each shared name is declared there, once.

The check reads every module of the package with `ast` (docstrings aside), so a Hub id, the embedded
model's name, the model-meta file name or a backends / prompt-styles tuple typed again anywhere else
fails here, and "declared once" stays true.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from lema_hub import schema

PACKAGE = Path(schema.__file__).resolve().parent
# hub.py's tables move into schema.py's "cards and repos" section (issue 15, helper r-hub); until
# that split lands, hub.py still restates them.
MOVING: set[str] = set()


def _strings(tree: ast.AST) -> list[str]:
    """Every string constant of a module except docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def _string_tuples(tree: ast.AST) -> list[frozenset[str]]:
    """The sets of strings in every tuple / list / set display of a module (type subscripts aside:
    `Literal["plain", "chat"]` names the type the tuple in schema.py holds)."""
    subscripts = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, (ast.Tuple, ast.List, ast.Set)) and n.elts and id(n) not in subscripts:
            if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in n.elts):
                out.append(frozenset(e.value for e in n.elts))
    return out


def _modules() -> dict[str, ast.AST]:
    """The package's modules (by path inside it) and the repo's scripts (by path inside the repo)."""
    repo = PACKAGE.parent
    files = {str(p.relative_to(PACKAGE)): p for p in PACKAGE.rglob("*.py")}
    for scripts in ("recipes", "spaces", "benchmarks"):
        files.update({str(p.relative_to(repo)): p for p in (repo / scripts).rglob("*.py")})
    return {name: ast.parse(p.read_text(encoding="utf-8")) for name, p in sorted(files.items())}


SHARED_LITERALS = sorted(
    {t.hub_id for t in schema.TASKS.values() if t.hub_id}
    | {
        schema.EMBEDDED_MODEL,
        schema.EMBEDDED_MODEL_HUB_ID,
        schema.MODEL_META_FILE,
        schema.BUNDLED_SAMPLE_ID,
        schema.BUNDLED_CSQA_SAMPLE_ID,
    }
)


@pytest.mark.parametrize("literal", SHARED_LITERALS)
def test_each_shared_literal_is_written_only_in_schema(literal):
    found = {
        name: sum(literal in s for s in _strings(tree))
        for name, tree in _modules().items()
        if name not in MOVING
    }
    elsewhere = {name: n for name, n in found.items() if n and name != "schema.py"}
    assert not elsewhere, f"{literal!r} restated outside lema_hub/schema.py: {elsewhere}"
    assert found["schema.py"] == 1, f"{literal!r} is written {found['schema.py']} times in schema.py"


def test_backends_and_prompt_styles_are_declared_only_in_schema():
    engine_backends = frozenset(schema.BACKENDS)
    styles = {frozenset(schema.PROMPT_STYLES), frozenset(schema.PROMPT_STYLE_CHOICES)}
    where: Counter[str] = Counter()
    for name, tree in _modules().items():
        if name in MOVING:
            continue
        for values in _string_tuples(tree):
            if engine_backends <= values or values in styles:
                where[name] += 1
    assert set(where) <= {"schema.py"}, f"backends / prompt styles restated in {dict(where)}"


def test_the_task_table_answers_what_each_stage_asked_its_own_copy():
    assert schema.TASKS["gsm8k"].hub_id == "openai/gsm8k" and schema.TASKS["gsm8k"].configs == ("main",)
    assert len(schema.TASKS["math"].configs) == 7
    assert schema.MATH_TASKS == ("sample", "gsm8k", "math", "math500", "svamp", "asdiv")
    assert schema.TRAIN_TASKS == ("sample", "gsm8k", "math", "math500", "csqa", "csqa_sample")
    assert schema.CHOICE_TASKS == ("csqa", "csqa_sample")
    assert set(schema.NUMERIC_TASKS) == {"sample", "gsm8k", "svamp", "asdiv"}
    assert schema.task_dataset_id("sample") == schema.BUNDLED_SAMPLE_ID
    assert schema.task_dataset_id("asdiv") == "EleutherAI/asdiv"
    assert schema.task_dataset_id("my/dataset") is None


def _parquet_features(folder: Path, config: str):
    import pyarrow.parquet as pq
    from datasets import Features

    files = sorted((folder / "data" / config).glob("*.parquet"))
    assert files, f"no parquet files for {config} in {folder}"
    return Features.from_arrow_schema(pq.read_schema(files[0]))


def test_build_writes_training_rows_with_the_schema_types(tmp_path):
    from lema_hub.build import BuildConfig, build

    out = build(
        BuildConfig(problems="sample", problems_limit=3, views=["cot"], output_dir=str(tmp_path / "mix"))
    )
    # Gold CoT rows have no generator or corrector: the columns are still strings, not `null`.
    assert _parquet_features(Path(out["output_dir"]), "sample-cot") == schema.training_row_features("plain")


def test_evaluate_writes_detail_rows_with_the_schema_types(tmp_path):
    import json

    from lema_hub.evaluate import EvalConfig, evaluate
    from lema_hub.problems import load_sample

    problems = load_sample("test")[:3]
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        "".join(
            json.dumps({"problem_id": p.problem_id, "completion": "The answer is 1."}) + "\n"
            for p in problems
        )
    )
    out = tmp_path / "eval"
    summary = evaluate(
        EvalConfig(
            models=["some-model"],
            problems="sample",
            problems_limit=3,
            predictions_path=str(preds),
            output_dir=str(out),
        )
    )
    (config,) = summary["results"]
    # `error` and the token counts are null in every row of a predictions file: typed all the same.
    assert _parquet_features(out, config) == schema.eval_detail_features()
