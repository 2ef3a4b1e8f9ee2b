"""The `correct` stage: ask a corrector (any LLM served through `lema_hub.generation`, or the offline
`reference` rules) to fix each mistake, and accept a correction only when its final answer grades
`correct` against gold. Rejected rows are kept with a reason from `schema.REJECT_REASONS`. The
corrector itself (prompt, parser, reference rules) is `lema_hub.corrector`; column names and types
of the rows are `lema_hub.schema`'s.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lema_hub import csqa, distributed, formats
from lema_hub.artifacts import (
    ConfigGroup,
    DatasetConfigWriter,
    HubArgs,
    StreamedRows,
    main_config,
    stream_rows,
)
from lema_hub.corrector.claims import first_false_step
from lema_hub.corrector.parse import ParsedCorrection, parse_correction
from lema_hub.corrector.prompt import (
    DEFAULT_PROMPTS,
    PROMPT_STYLES,
    CorrectorPrompt,
    build_choice_corrector_input,
    build_corrector_input,
    corrector_prompt,
)
from lema_hub.corrector.prompt import sha12 as _sha12
from lema_hub.corrector.quality import headline
from lema_hub.corrector.reference import reference_correction, reference_rules_ref, reference_step
from lema_hub.errors import InvalidInputError
from lema_hub.generation import GenerationRequest, SamplingParams
from lema_hub.generation.types import EndpointArgs
from lema_hub.grading import CORRECT, grade_rows
from lema_hub.problems import task_of
from lema_hub.publish import finish
from lema_hub.run_guard import RequestOutcome, guard_publish
from lema_hub.schema import (
    CHOICE_TASK,
    CORRECTION_COLUMNS,
    CORRECTOR_TOKENS,
    REFERENCE_CORRECTOR,
    correction_features,
)
from lema_hub.schema import CORRECTOR_BACKENDS as BACKENDS

logger = logging.getLogger(__name__)

# Corrections parsed, graded and written together.
_BATCH_ROWS = 2048


@dataclass
class CorrectConfig(HubArgs, EndpointArgs):
    """`lema-hub correct`: correct every mistake with an LLM (through the engine) or the reference rules."""

    mistakes: str | None = field(
        default=None, metadata={"help": "Mistakes folder or Hub dataset id (from `lema-hub collect`)"}
    )
    mistakes_config: str | None = field(
        default=None, metadata={"help": "Its `<task>` config; default: the folder's main config"}
    )
    mistakes_limit: int | None = field(default=None, metadata={"help": "First N mistakes only (smoke runs)"})
    output_dir: str | None = field(default=None, metadata={"help": "Default: outputs/<task>/corrections"})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Config name of the output; default: the mistakes config"}
    )
    backend: str = field(
        default=REFERENCE_CORRECTOR,
        metadata={"help": "reference (rule-based, offline) | transformers | openai | tgi | vllm"},
    )
    model: str | None = field(
        default=None, metadata={"help": "The corrector model (required unless backend is reference)"}
    )
    prompt_style: str = field(
        default="plain", metadata={"help": "plain (completion, the paper's way) | chat (one user message)"}
    )
    corrector_prompt_file: str | None = field(
        default=None, metadata={"help": "E.g. the paper's prompt_correction_gsm8k.txt, verbatim"}
    )
    corrector_task: str | None = field(
        default=None, metadata={"help": "gsm8k | math: which bundled prompt; default: from the problems"}
    )
    num_attempts: int = field(default=1, metadata={"help": "k corrections sampled per mistake"})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p."})
    max_tokens: int = field(default=768, metadata={"help": "Max new tokens per generation."})
    seed: int | None = field(default=0, metadata={"help": "Random seed (sampling, shuffling)."})
    reference_qa: bool = field(
        default=True,
        metadata={"help": "Also record the rule-based locator's step (agreement in the summary)"},
    )
    grading_workers: int | None = field(
        default=None, metadata={"help": "Processes for batch grading (default: CPU count)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    price_table: dict | None = field(
        default=None,
        metadata={
            "help": "$ per million tokens per model, {model: {input: x, output: y}}, for the card's cost"
        },
    )
    check_arithmetic: bool = field(
        default=False,
        metadata={"help": "Reject accepted corrections whose own steps hold a false `a op b = c` claim"},
    )
    corrector_benchmark: str | None = field(
        default=None,
        metadata={"help": "A `lema-hub bench-corrector` folder or Hub repo: its numbers go on the card"},
    )
    shard: str | None = field(
        default=None,
        metadata={
            "help": "'i/n': correct the i-th (0-based) of n contiguous slices of the mistakes into "
            "<output_dir>-shard-i-of-n (never pushed); then --merge_shards true"
        },
    )
    merge_shards: bool = field(
        default=False,
        metadata={
            "help": "Merge the finished <output_dir>-shard-* folders into output_dir instead of correcting"
        },
    )

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}.")
        if self.prompt_style not in PROMPT_STYLES:
            raise InvalidInputError(
                f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}."
            )
        if self.num_attempts < 1:
            raise InvalidInputError(f"num_attempts must be >= 1, got {self.num_attempts}.")
        if self.backend != REFERENCE_CORRECTOR and not self.model:
            raise InvalidInputError(f"backend {self.backend!r} needs `model` (the corrector model name).")
        distributed.check_shard_args(self.shard, self.merge_shards)
        if self.corrector_task not in (None, *DEFAULT_PROMPTS):
            raise InvalidInputError(
                f"corrector_task must be one of {sorted(DEFAULT_PROMPTS)}, got {self.corrector_task!r}."
            )


def _row_task(row: dict) -> str:

    return task_of(row)


def _corrector_input(p: CorrectorPrompt, m: dict, style: str) -> str | list[dict]:
    """The corrector's input for one mistake: math shows its steps, CSQA its original answer text."""
    if _row_task(m) == CHOICE_TASK:
        return build_choice_corrector_input(p, m["question"], list(m["candidates"]), m["completion"], style)
    return build_corrector_input(p, m["question"], list(m["steps"]), style)


def _rows_of(mistakes: StreamedRows) -> Iterator[dict]:
    """The mistakes in order as dicts, `_BATCH_ROWS` converted at a time."""
    for table in mistakes.batches(_BATCH_ROWS):
        yield from table.to_pylist()


def _chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """`rows` in lists of `size` (the last one shorter): one row group per list, whatever the input's."""
    chunk: list[dict] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _request_id(m: dict, content: str | list[dict]) -> str:
    """A content hash, so a resumed or extended run reuses the engine's cache."""
    key = (m.get("problem_id"), m.get("generator"), m.get("sample_index"), content)
    return f"correct-{_sha12(repr(key).encode())}"


def _correction_rows(
    cfg: CorrectConfig, mistakes: StreamedRows, output_dir: Path
) -> tuple[Iterator[list[dict]], dict]:
    """Batches of rows, one per (mistake, attempt), with parsed fields but before grading.

    The LLM's requests are all answered first (and their failures counted in the returned tokens'
    `outcome`), built one at a time as the engine draws them from a first pass over the mistakes;
    the rows are then built a batch at a time as the iterator is consumed, from a second pass in
    step with the results (request k is mistake k, its `num_attempts` samples consecutive).
    """

    tokens: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}
    if cfg.backend == REFERENCE_CORRECTOR:
        return _reference_batches(mistakes), tokens

    prompts: dict[str, CorrectorPrompt] = {}

    def prompt_for(task: str) -> CorrectorPrompt:
        key = cfg.corrector_task or task
        if key not in prompts:
            prompts[key] = corrector_prompt(key, cfg.corrector_prompt_file)
        return prompts[key]

    # Stop where a base model would start the next demonstration.
    sampling = SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_tokens,
        n=cfg.num_attempts,
        seed=cfg.seed,
        stop=["\nQuestion:", "\r\nQuestion:"],
    )

    def requests() -> Iterator[GenerationRequest]:
        # Drawn by the engine as it goes: only the prompts in flight are held, not one per mistake.
        for m in _rows_of(mistakes):
            content = _corrector_input(prompt_for(_row_task(m)), m, cfg.prompt_style)
            yield GenerationRequest(request_id=_request_id(m, content), prompt=content, sampling=sampling)

    engine_cfg = cfg.engine_config(cfg.backend, cfg.model, cfg.prompt_style, progress=cfg.progress)
    # `.cache/` is never pushed; the engine's request cache makes an interrupted run resume.
    cache = output_dir / ".cache" / f"correct-{_sha12(repr((cfg.backend, cfg.model)).encode())}.jsonl"
    engine = distributed.make_engine(engine_cfg, cache_path=cache)  # shared by the ranks when launched
    try:
        results = engine.generate(requests(), desc="correcting")
        tokens["engine"] = dict(engine.last_summary)
    finally:
        engine.close()
    tokens["outcome"] = RequestOutcome("correct")
    tokens["outcome"].add(results, engine.last_summary)
    tokens["requests"] = len(results)
    # The engine's (or the ranks' merged) totals, counted as the results landed: no pass over the texts.
    tokens["prompt_tokens"] = engine.last_summary["prompt_tokens"]
    tokens["completion_tokens"] = engine.last_summary["completion_tokens"]

    n = cfg.num_attempts
    if len(results) != n * len(mistakes):
        raise RuntimeError(f"correct: {len(results)} results for {len(mistakes)} mistakes x {n} attempts.")

    def batches() -> Iterator[list[dict]]:
        # `results` is only read (len, slices): it may be a lazy view of the engine's cache.
        pending = _rows_of(mistakes)
        at, m, p = -1, {}, None  # the mistake of the current result, and its prompt
        for lo in range(0, len(results), _BATCH_ROWS):
            rows = []
            for k, res in enumerate(results[lo : lo + _BATCH_ROWS], lo):
                if k // n != at:
                    at, m = k // n, next(pending)
                    p = prompt_for(_row_task(m))
                    rid = _request_id(m, _corrector_input(p, m, cfg.prompt_style))
                if res.request_id != rid:
                    raise RuntimeError(
                        f"correct: result {k} answers {res.request_id}, not mistake {at} ({rid})."
                    )
                if not res.ok:
                    parsed = ParsedCorrection(
                        reject_reason="generation_failed", detail=res.error or "no text"
                    )
                else:
                    parsed = parse_correction(res.text, len(m["steps"]), _row_task(m))
                rows.append(
                    _correction_row(m, cfg.model or "", p.ref, res.sample_index, res.text, parsed, res)
                )
            yield rows

    return batches(), tokens


def _reference_batches(mistakes: StreamedRows) -> Iterator[list[dict]]:
    """The rule-based corrector's rows, `_BATCH_ROWS` mistakes at a time."""
    ref_name = reference_rules_ref()
    for batch in _chunks(_rows_of(mistakes), _BATCH_ROWS):
        rows = []
        for m in batch:
            if _row_task(m) == CHOICE_TASK:  # the rules recompute math steps; a choice has none
                parsed = ParsedCorrection(
                    reject_reason="no_reference",
                    detail="the reference corrector's rules are for math; CSQA needs an LLM corrector",
                )
                rows.append(_correction_row(m, REFERENCE_CORRECTOR, ref_name, 0, None, parsed, None))
                continue
            parsed = reference_correction(m, list(m["steps"]))
            raw = None
            if parsed is not None:
                raw = formats.correction_target(
                    parsed.incorrect_step, parsed.explanation, parsed.corrected_steps
                )
                # Same path as an LLM's output: the rendered text is parsed back and graded.
                parsed = parse_correction(raw, len(m["steps"]), _row_task(m))
            else:
                # No gold steps to rewrite from; the arithmetic check may still locate the error.
                located = first_false_step(list(m["steps"]))
                parsed = ParsedCorrection(
                    incorrect_step=located[0] if located else None,
                    reject_reason="no_reference",
                    detail="no calculator annotations in the gold solution, or no steps"
                    + (f"; arithmetic check: step {located[0]}: {located[1].describe()}" if located else ""),
                )
            rows.append(_correction_row(m, REFERENCE_CORRECTOR, ref_name, 0, raw, parsed, None))
        yield rows


def _correction_row(
    m: dict,
    corrector: str,
    prompt_ref: str,
    attempt: int,
    raw: str | None,
    parsed: ParsedCorrection,
    res: Any,
) -> dict:
    row = dict(m)
    row.update(
        {CORRECTOR_TOKENS.model: corrector},
        corrector_kind="rule-based" if corrector == REFERENCE_CORRECTOR else "llm",
        corrector_prompt=prompt_ref,
        attempt=int(attempt),
        raw_output=raw or "",
        incorrect_step=parsed.incorrect_step,
        explanation=parsed.explanation,
        corrected_steps=list(parsed.corrected_steps),
        corrected_answer=parsed.corrected_answer,
        accepted=False,
        reject_reason=parsed.reject_reason,
        reject_detail=parsed.detail,
        reference_step=None,
        correction_finish_reason=getattr(res, "finish_reason", None),
    )
    row[CORRECTOR_TOKENS.prompt] = getattr(res, "prompt_tokens", None)
    row[CORRECTOR_TOKENS.completion] = getattr(res, "completion_tokens", None)
    return row


# A corrected solution's verdict -> its reject reason (``correct`` is accepted).
_REJECT_FOR_VERDICT = {"wrong": "wrong_answer", "no_answer": "no_answer"}


def _grade_corrections(rows: list[dict], workers: int | None) -> None:
    """accepted iff the corrected answer grades `correct` against gold; a CSQA answer must also name
    the gold candidate as written (`csqa.names_candidate`): one that reaches it only through the
    edit-distance mapping is `inexact_choice` (training data is stricter than evaluation)."""

    todo = [r for r in rows if r["reject_reason"] is None]
    # The corrected solution itself is graded: the same extraction as the CoT evaluation.
    verdicts = grade_rows(
        todo,
        workers=workers,
        text=lambda r: "\n".join(r["corrected_steps"]),
        gold=lambda r: str(r["gold_answer"]),
        task=_row_task,
    )
    for r, v in zip(todo, verdicts):
        if v.verdict == CORRECT and _row_task(r) == CHOICE_TASK:
            if not csqa.names_candidate(v.predicted_answer, str(r["gold_answer"])):
                r["reject_reason"] = "inexact_choice"
                r["reject_detail"] = (
                    f"{v.predicted_answer!r} is not the gold candidate {r['gold_answer']!r} as written; "
                    "it reaches it only through the edit-distance mapping, which training data does not use"
                )
                continue
        if v.verdict == CORRECT:
            r["accepted"] = True
        else:
            r["reject_reason"] = _REJECT_FOR_VERDICT.get(v.verdict, "ungradeable")
            r["reject_detail"] = f"{r['corrected_answer']!r} vs gold {r['gold_answer']!r}: {v.reason}"


def check_corrections_arithmetic(rows: list[dict]) -> int:
    """Reject (`false_claim`) accepted corrections whose corrected steps hold a false arithmetic claim.

    The paper checks only a correction's final answer; a right answer reached through a false
    `a op b = c` would teach the wrong step. Returns how many were rejected.
    """

    n = 0
    for r in rows:
        if not r["accepted"] or _row_task(r) == CHOICE_TASK:  # CSQA answers are prose, not arithmetic
            continue
        located = first_false_step(list(r["corrected_steps"]))
        if located:
            j, claim = located
            step = (r["incorrect_step"] or 1) + j - 1  # corrected steps start at the incorrect step
            r["accepted"] = False
            r["reject_reason"] = "false_claim"
            r["reject_detail"] = f"corrected step {step}: {claim.describe()}"
            n += 1
    return n


def _rate(n: int, accepted: int) -> dict[str, Any]:
    return {"n": n, "accepted": accepted, "acceptance_rate": round(accepted / n, 4) if n else None}


def _step_bucket(r: dict) -> str | None:
    if _row_task(r) == CHOICE_TASK:  # the CSQA schema has no step index
        return None
    k = r.get("incorrect_step")
    if k is None:
        return "unparsed"
    n = r["n_steps"] if "n_steps" in r else len(r.get("steps") or [])
    return "final" if k == n else ("first" if k == 1 else "middle")


_SUMMARY_KEYS = (
    "accepted", "reject_reason", "problem_id", "generator", "sample_index", "level", "subject",
    "incorrect_step", "reference_step", "source", "candidates",
)  # fmt: skip


def _summary_fields(row: dict) -> dict:
    """The columns `summarize` reads of a correction row (its step count instead of its steps)."""
    return {k: row.get(k) for k in _SUMMARY_KEYS} | {"n_steps": len(row.get("steps") or [])}


# The summary's `by_*` groups: acceptance by the (str of the) key, rows whose key is None left out.
_GROUPS = (
    ("by_generator", lambda r: r.get("generator")),
    ("by_level", lambda r: r.get("level")),
    ("by_subject", lambda r: r.get("subject")),
    ("by_step_position", _step_bucket),
    ("by_incorrect_step", lambda r: r.get("incorrect_step")),
)
_DIGEST_BYTES = 16


class CorrectionSummary:
    """`summarize`'s numbers added up a batch of rows at a time (`add(rows)`, then `result()`).

    What it holds grows with the groups (generators, levels, reasons ...), not with the rows, but
    for the distinct mistakes: a 16-byte digest of each (problem_id, generator, sample_index), in
    one bytearray (no Python object per row), consecutive repeats (a mistake's attempts) once.
    """

    def __init__(self) -> None:
        self.n = self.accepted = self.rejected = 0
        self.reasons: Counter[Any] = Counter()
        self.groups: dict[str, dict[str, list[int]]] = {name: {} for name, _ in _GROUPS}
        self.both = self.agree = self.applies = 0  # the rule-based locator's agreement
        self._digests = bytearray()
        self._last = b""

    def add(self, rows: Iterable[dict]) -> CorrectionSummary:
        """Count `rows` in; returns self."""
        for r in rows:
            ok = r["accepted"]
            self.n += 1
            self.accepted += ok
            self.rejected += not ok
            if not ok:
                self.reasons[r["reject_reason"]] += 1
            for name, key in _GROUPS:
                k = key(r)
                if k is not None:
                    counts = self.groups[name].setdefault(str(k), [0, 0])
                    counts[0] += 1
                    counts[1] += ok
            ref, step = r.get("reference_step"), r.get("incorrect_step")
            if ref is not None:
                self.applies += 1
                if step is not None:
                    self.both += 1
                    self.agree += ref == step
            key = repr((r.get("problem_id"), r.get("generator"), r.get("sample_index")))
            digest = hashlib.blake2b(key.encode(), digest_size=_DIGEST_BYTES).digest()
            if digest != self._last:
                self._digests += digest
                self._last = digest
        return self

    def distinct_mistakes(self) -> int:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(self._digests) // _DIGEST_BYTES
        digests = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(_DIGEST_BYTES), n, [None, pa.py_buffer(bytes(self._digests))]
        )
        return int(pc.count_distinct(digests).as_py())

    def result(self) -> dict[str, Any]:
        """The summary of the rows added so far: exactly `summarize` of them all."""
        summary: dict[str, Any] = {**_rate(self.n, self.accepted), "rejected": self.rejected}
        summary["mistakes"] = self.distinct_mistakes()
        summary["reject_reasons"] = dict(self.reasons.most_common())
        for name, _ in _GROUPS:
            summary[name] = {k: _rate(*v) for k, v in sorted(self.groups[name].items())}
        summary["reference_agreement"] = {
            "n": self.both,
            "agree": self.agree,
            "rate": round(self.agree / self.both, 4) if self.both else None,
            "applies": self.applies,
        }
        return summary


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Acceptance overall, by generator, level, subject, step position; reasons; locator agreement."""
    return CorrectionSummary().add(rows).result()


def stream_features(batches: Iterable[Any], columns: Sequence[str]) -> Any:
    """The Features `Dataset.from_list` of all the batches' rows would infer for `columns`, a
    batch (a `pyarrow.Table`) at a time: each batch's types, inferred from its Python values, unified.

    A column null in every row stays `null` (as every earlier run wrote it); one null (or empty
    lists, or a struct field null) in some batches takes the type the others give; a column a
    batch lacks is null there. No batch at all: every column `null`.
    """
    import pyarrow as pa
    from datasets import Features

    schema = pa.schema([pa.field(k, pa.null()) for k in columns])
    for table in batches:
        names = set(table.column_names)
        found = pa.schema(
            [
                pa.field(k, pa.array(table.column(k).to_pylist()).type if k in names else pa.null())
                for k in columns
            ]
        )
        schema = pa.unify_schemas([schema, found], promote_options="permissive")
    return Features.from_arrow_schema(schema)


@distributed.stage
def correct(cfg: CorrectConfig) -> dict[str, Any]:
    """Run the corrector over a mistakes dataset; write accepted (`<task>`) and rejected (`<task>-rejected`).

    Corrections are parsed, graded and written `_BATCH_ROWS` at a time: the rows of the whole run
    are never in memory together. With `shard: i/n`, only the i-th contiguous slice of the
    mistakes, into its shard folder; with `merge_shards`, the finished shards merged into
    `output_dir` (see `merge_shards`).
    """
    t0 = time.time()
    config, name, output_dir = _names(cfg)
    if cfg.merge_shards:
        return merge_shards(cfg, name, output_dir)
    # Read from disk a batch at a time on each pass (features, requests, rows): never held whole.
    mistakes = stream_rows(cfg.mistakes, config, missing_ok=True)
    if not len(mistakes):
        raise InvalidInputError(f"correct: {cfg.mistakes} [{config}] has no mistakes to correct.")
    if cfg.mistakes_limit is not None:
        mistakes = mistakes.head(cfg.mistakes_limit)
    mistakes = mistakes.slice(*distributed.shard_range(len(mistakes), cfg.shard))  # may be empty
    output_dir = distributed.shard_output(output_dir, cfg.shard)
    output_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "correcting %d mistakes from %s [%s] with %s",
        len(mistakes),
        cfg.mistakes,
        config,
        cfg.model or cfg.backend,
    )

    quality = None
    if cfg.corrector_benchmark:  # read before any request is sent: a bad path fails fast
        quality = headline(cfg.corrector_benchmark)
    batches, tokens = _correction_rows(cfg, mistakes, output_dir)
    outcome = tokens.pop("outcome", None)
    # Before anything is written: a run whose requests failed never replaces finished rows.
    guard_publish(outcome, output_dir, "correct", name, [name, f"{name}-rejected"])

    def graded() -> Iterator[list[dict]]:
        for rows in batches:
            if cfg.reference_qa:
                for r in rows:
                    r["reference_step"] = reference_step(r, list(r["steps"]))
            _grade_corrections(rows, cfg.grading_workers)
            if cfg.check_arithmetic:
                check_corrections_arithmetic(rows)
            yield rows

    # The mistake columns' types as `Dataset.from_list` of the rows would infer them, then the
    # correction columns' fixed types.
    features = correction_features(stream_features(mistakes.batches(_BATCH_ROWS), mistakes.schema.names))
    counts, prompt_refs = _write_rows(output_dir, name, graded(), features)
    if quality is not None:
        quality["same_corrector"] = quality.get("corrector") == (cfg.model or REFERENCE_CORRECTOR)
    summary = _summary(
        cfg,
        counts,
        prompt_refs,
        output_dir,
        name,
        tokens=tokens,
        requests={name: outcome.record()} if outcome is not None else None,
        corrector_quality=quality,
        wall_s=round(time.time() - t0, 2),
        shard=cfg.shard,
        **distributed.record(),
    )
    # Released before the card reads the folder back: the results (held by the batches' generator).
    del mistakes, counts
    batches = iter(())
    _finish(output_dir, cfg, summary)
    logger.info(
        "corrections: %d/%d accepted (%s)", summary["accepted"], summary["n"], summary["reject_reasons"]
    )
    return summary


def _names(cfg: CorrectConfig) -> tuple[str, str, Path]:
    """(the mistakes config read, the config name written, the output folder) of a run."""
    if not cfg.mistakes:
        raise InvalidInputError(
            "correct: set `mistakes` to a mistakes folder or Hub dataset id (from `lema-hub collect`)."
        )
    config = cfg.mistakes_config or main_config(cfg.mistakes)
    name = cfg.dataset_config_name or config
    return config, name, Path(cfg.output_dir or f"outputs/{name}/corrections")


def _summary(
    cfg: CorrectConfig,
    counts: CorrectionSummary,
    prompt_refs: set[str],
    output_dir: Path,
    name: str,
    **extra: Any,
) -> dict[str, Any]:
    """The run summary of the graded rows `counts` added up, with the run's settings; `extra`
    entries set to None are left out."""
    summary = counts.result()
    summary.update(
        output_dir=str(output_dir),
        config=name,
        corrector=cfg.model or REFERENCE_CORRECTOR,
        backend=cfg.backend,
        corrector_prompt=sorted(prompt_refs),
        num_attempts=cfg.num_attempts,
        check_arithmetic=cfg.check_arithmetic,
    )
    summary.update({k: v for k, v in extra.items() if v is not None})
    return summary


def _write_rows(
    output_dir: Path, name: str, batches: Iterable[list[dict]], features: Any
) -> tuple[CorrectionSummary, set[str]]:
    """Accepted rows to `<name>`, rejected ones to `<name>-rejected`, a batch at a time; returns the
    rows' summary counts and the corrector prompts named. An empty side is not written (and a stale
    one from an earlier run is removed); nothing changes on disk if a batch fails."""
    counts = CorrectionSummary()
    prompt_refs: set[str] = set()
    # The inner writer finishes first, so `<task>` is listed before `<task>-rejected`, as before;
    # the group lists both at once (never one run's accepted rows with another's rejected ones).
    with (
        ConfigGroup(output_dir) as group,
        DatasetConfigWriter(output_dir, f"{name}-rejected", features, group=group) as rejected_writer,
        DatasetConfigWriter(output_dir, name, features, group=group) as accepted_writer,
    ):
        for rows in batches:
            accepted_writer.write([r for r in rows if r["accepted"]])
            rejected_writer.write([r for r in rows if not r["accepted"]])
            # What the summary reads of a row: its step count, as it always was, not an `n_steps` column.
            counts.add(_summary_fields(r) for r in rows)
            prompt_refs.update(r["corrector_prompt"] for r in rows)
    return counts, prompt_refs


def _finish(output_dir: Path, cfg: CorrectConfig, summary: dict[str, Any]) -> None:
    """The record and card; a shard gets no card and is never pushed (its merge is)."""
    whole = not cfg.shard
    finish(output_dir, "corrections", cfg, summary, recipe="correct", card=whole, push=whole)


def merge_shards(cfg: CorrectConfig, name: str, output_dir: Path) -> dict[str, Any]:
    """Concatenate the finished `<output_dir>-shard-*` folders into `output_dir`, in shard order (the
    order one process writes: each shard corrected a contiguous slice of the mistakes).

    Refused before anything is written: shards run with other data settings than this command
    (`distributed.check_merge_config`). The summary has an unsharded run's keys: token counts,
    request records and the engine's statistics (`tokens.engine`) added up over the shards;
    `wall_s` is the shards' added up plus the merge's own.
    """
    t0 = time.perf_counter()
    shards = distributed.read_shards(output_dir, "correct")
    distributed.check_merge_config(shards, "correct", cfg)
    # Accepted then rejected rows of each shard in turn, read from disk a batch at a time on each
    # pass; `_write_rows` splits them again, each side in shard order.
    parts = [s.stream(c) for s in shards for c in (name, f"{name}-rejected")]
    first = next((part for part in parts if len(part)), None)
    if first is None:
        raise InvalidInputError(f"correct: the shards of {output_dir} hold no corrections to merge.")
    mistake_columns = [k for k in first.schema.names if k not in CORRECTION_COLUMNS]
    batches = (t for part in parts for t in part.batches(_BATCH_ROWS))
    features = correction_features(stream_features(batches, mistake_columns))
    rows = (r for part in parts for r in _rows_of(part))
    counts, prompt_refs = _write_rows(output_dir, name, _chunks(rows, _BATCH_ROWS), features)
    tokens = [{k: v for k, v in (s.summary.get("tokens") or {}).items() if k != "engine"} for s in shards]
    merged_tokens = distributed.add_counts(tokens)
    engine = distributed.merged_engine_stats([(s.summary.get("tokens") or {}).get("engine") for s in shards])
    if engine is not None:
        merged_tokens["engine"] = engine
    summary = _summary(
        cfg,
        counts,
        prompt_refs,
        output_dir,
        name,
        tokens=merged_tokens,
        requests=distributed.merged_requests(shards, name),
        corrector_quality=distributed.shard_value(shards, "corrector_quality"),
        **distributed.merged_wall_s(shards, t0),
        merged_shards=len(shards),
    )
    _finish(output_dir, cfg, summary)
    logger.info(
        "corrections: merged %d shards, %d/%d accepted", len(shards), summary["accepted"], summary["n"]
    )
    return summary
