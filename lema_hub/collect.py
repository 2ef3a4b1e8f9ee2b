"""Mistake collection: sample CoT paths from one or more generators, grade them, keep the wrong ones.

`lema-hub collect --config recipes/smollm2-135m/collect/config_sample.yaml` writes a Hub-layout
folder with two configs: `<task>` (the wrong paths, de-duplicated per problem) and
`<task>-samples` (every sampled path with its verdict and the problem's pass rate per generator).

Verdicts (``lema_hub.grading.VERDICTS``): `correct`, `wrong` (an answer that differs from the
gold), `no_answer` (the path states none), `truncated` (cut at `max_tokens` and not correct),
`ungradeable` (the gold cannot be read). Only `wrong` paths are mistakes by default: an unfinished
path is not a wrong answer, and a corrector would only learn to "correct" truncation.
`include_unfinished: true` adds `no_answer` and `truncated` paths. Verdicts use the `flexible`
extraction (`extraction:`), so a right answer written without "The answer is" is not a mistake;
`format_ok` records whether the paper's strict rule finds the answer, to filter as the paper did.

Scale-out: `--shard i/n` runs 1/n of the problems into `<output_dir>-shard-0000i-of-0000n`; once
every shard has finished, `--merge_shards true` (same config, no `--shard`) concatenates them in
shard order into `<output_dir>`, recomputing the de-duplicated mistakes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from lema_hub import distributed
from lema_hub.artifacts import ConfigGroup, DatasetConfigWriter, HubArgs
from lema_hub.errors import InvalidInputError
from lema_hub.formats import problem_prompt, split_steps
from lema_hub.generation import EngineConfig, GenerationRequest, SamplingParams
from lema_hub.generation.cache import DigestIndex, digest64
from lema_hub.generation.types import EndpointArgs
from lema_hub.grading import (
    CORRECT,
    EXTRACTIONS,
    NO_ANSWER,
    TRUNCATED,
    VERDICTS,
    WRONG,
    format_ok,
    grade_rows,
)
from lema_hub.problems import ProblemArgs, iter_problems, load_problems, task_of
from lema_hub.publish import finish
from lema_hub.run_guard import RequestOutcome, guard_publish
from lema_hub.schema import (
    BACKENDS,
    DEFAULT_MODEL,
    TRAIN_TASKS,
    conform_in_place,
    mistake_features,
    sample_features,
)

logger = logging.getLogger(__name__)

RECIPE = "collect"
# Sample rows graded and written together (whole problems: a little more when a problem straddles).
_BATCH_ROWS = 2048
# Keys a `generators:` entry may set; the top-level fields of the same names are their defaults.
GENERATOR_KEYS = (
    "name",
    "model",
    "backend",
    "base_urls",
    "api_key_env",
    "prompt_style",
    "num_samples",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "stop",
    "concurrency",
    "batch_size",
    "max_retries",
    "request_timeout",
    "extra_body",
    "retry_base_delay",
    "retry_max_delay",
    "hedge_quantile",
    "hedge_after_s",
    "max_hedges",
)
# The generator keys that configure its engine (the rest: name and sampling).
ENGINE_KEYS = tuple(k for k in GENERATOR_KEYS if k in {f.name for f in dataclasses.fields(EngineConfig)})


class _CollectExtras(TypedDict, total=False):
    requests: dict[str, Any]
    shard: str | None
    generators: dict[str, Any]
    wall_s: float
    merged_shards: int
    hub_url: str


class CollectSummary(_CollectExtras):
    """What `collect` returns and records in run_summary.json: one name per count, read by the quickstart."""

    output_dir: str
    config_name: str  # the mistakes config; `samples_config` holds every sampled path
    samples_config: str
    problems: int
    samples: int
    correct: int  # one count per verdict (grading.VERDICTS) ...
    wrong: int
    no_answer: int
    truncated: int
    ungradeable: int
    mistakes: int  # ... and the de-duplicated mistakes kept
    duplicates_removed: int
    extraction: str
    include_unfinished: bool
    set_aside: dict[str, int]  # paths neither correct nor kept, by verdict (not sent to a corrector)
    format_ok: int
    prompt_tokens: int
    completion_tokens: int
    failed_requests: int


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class CollectConfig(ProblemArgs, HubArgs, EndpointArgs):
    """Configuration of `lema-hub collect` / `recipes/collect.py`."""

    output_dir: str = _f(
        "outputs/lema-mistakes", "folder of the Hub-layout dataset (with --shard: <output_dir>-shard-i-of-n)"
    )
    dataset_config_name: str | None = _f(
        None, "config name of the mistakes; default: the problem collection (sample, gsm8k, ...)"
    )
    generators: list[dict] | None = _f(
        None,
        "several generators: a list of mappings with keys "
        + ", ".join(GENERATOR_KEYS)
        + "; the top-level fields are their defaults",
    )
    model: str = _f(
        DEFAULT_MODEL,
        "generator model: a lema_hub model name, or the served model name for endpoints",
    )
    backend: str = _f("transformers", " | ".join(BACKENDS))
    prompt_style: str = _f("auto", "plain (raw completion) | chat (chat template / chat API) | auto")
    num_samples: int = _f(4, "paths sampled per problem and generator")
    temperature: float = _f(0.8, "sampling temperature (0 = greedy)")
    top_p: float = _f(1.0, "nucleus sampling")
    max_tokens: int = _f(512, "max new tokens per path")
    seed: int | None = _f(0, "base seed; sample k uses seed + k")
    stop: list[str] | None = _f(None, "stop strings")
    retry_base_delay: float = _f(
        1.0, "first backoff in seconds (doubles per retry, with jitter; Retry-After wins)"
    )
    retry_max_delay: float = _f(60.0, "longest backoff in seconds")
    progress: bool = _f(True, "show a progress bar with req/s, tok/s and ETA")
    merge_shards: bool = _f(
        False, "merge the finished <output_dir>-shard-* folders into output_dir instead of generating"
    )
    price_table: dict | None = _f(
        None, "$ per million tokens per model, {model: {input: x, output: y}}, for the card's cost table"
    )
    write_card: bool = _f(True, "render the dataset card (README.md) after writing the data")
    extraction: str = _f(
        "flexible",
        "answer extraction for the verdicts: flexible (also 'Answer:', '####', the last sentence...) | "
        "strict (the paper's 'The answer is' / \\boxed{} rule)",
    )
    include_unfinished: bool = _f(
        False, "also keep no_answer and truncated paths as mistakes (default: wrong answers only)"
    )

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.num_samples < 1:
            raise InvalidInputError(f"num_samples must be >= 1, got {self.num_samples}.")
        distributed.check_shard_args(self.shard, self.merge_shards)

        if self.extraction not in EXTRACTIONS:
            raise InvalidInputError(
                f"extraction must be one of {', '.join(EXTRACTIONS)}, got {self.extraction!r}."
            )


def generator_configs(cfg: CollectConfig) -> list[tuple[str, EngineConfig, SamplingParams]]:
    """(name, engine config, sampling) of every generator, with top-level fields as defaults."""
    entries = cfg.generators if cfg.generators else [{}]
    out = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidInputError(f"generators[{i}] must be a mapping, got {type(entry).__name__}.")
        unknown = sorted(set(entry) - set(GENERATOR_KEYS))
        if unknown:
            raise InvalidInputError(
                f"generators[{i}] has unknown key(s) {unknown}; valid keys: {', '.join(GENERATOR_KEYS)}."
            )
        g = {k: entry.get(k, getattr(cfg, k, None)) for k in GENERATOR_KEYS}
        name = entry.get("name") or g["model"]
        if name in names:
            raise InvalidInputError(
                f"generators[{i}]: two generators are named {name!r}; give them distinct `name`s."
            )
        names.add(name)
        engine = EngineConfig(**{k: g[k] for k in ENGINE_KEYS}, progress=cfg.progress)
        sampling = SamplingParams(
            temperature=g["temperature"],
            top_p=g["top_p"],
            max_tokens=g["max_tokens"],
            n=g["num_samples"],
            stop=g["stop"],
            seed=g["seed"],
        )
        out.append((name, engine, sampling))
    return out


def _prompt_digest(p: Any) -> int:
    """64 bits standing for a problem as this run asks it: its id and prompt."""
    return digest64(f"{p.problem_id}\x00{problem_prompt(p)}")


def _same_problem(cfg: CollectConfig, digests: array, k: int, p: Any) -> None:
    """Refuse a problem source that changed while this run read it (problem `k` is not the one the
    first pass saw, or the source ended early or late): the rows would pair paths with the wrong
    problems."""
    if (p is None) == (k >= len(digests)) and (p is None or _prompt_digest(p) == digests[k]):
        return
    source = cfg.problems_path or cfg.problems
    raise InvalidInputError(
        f"collect: the problems ({source}) changed while this run read them (problem {k} differs from "
        "its first reading); rerun once the source is stable (finished requests come from the cache)."
    )


def config_name_for(cfg: CollectConfig, problems: list) -> str:
    if cfg.dataset_config_name:
        return cfg.dataset_config_name
    if cfg.problems in TRAIN_TASKS:
        return cfg.problems

    return task_of(problems[0]) if problems else "default"


def dedup_key(text: str) -> str:
    """Text key for de-duplication: case and whitespace do not make a new mistake."""
    return " ".join(text.lower().split())


def mistake_verdicts(include_unfinished: bool = False) -> tuple[str, ...]:
    """The verdicts a mistakes config holds: ``wrong``, plus ``no_answer`` / ``truncated`` on request."""

    return (WRONG, NO_ANSWER, TRUNCATED) if include_unfinished else (WRONG,)


def _mistake_key(problem_id: Any, completion: str) -> int:
    """64 bits standing for (problem, normalised completion): what makes two paths one mistake."""
    return digest64(f"{problem_id}\x00{dedup_key(completion)}")


def select_mistakes(
    samples: list[dict], include_unfinished: bool = False, seen: DigestIndex | None = None
) -> tuple[list[dict], int]:
    """Mistakes (see ``mistake_verdicts``), first occurrence per (problem, normalised completion);
    also the number of duplicates dropped. Pass one `seen` set to every batch of a run to
    de-duplicate across batches (a `DigestIndex`: 16-32 bytes per mistake, not its text)."""
    keep = mistake_verdicts(include_unfinished)
    seen = DigestIndex() if seen is None else seen
    out, dupes = [], 0
    for row in samples:
        if row["verdict"] not in keep:
            continue
        key = _mistake_key(row["problem_id"], row["completion"])
        if key in seen:
            dupes += 1
            continue
        seen.add(key)
        out.append(row)
    return out, dupes


def _grade_rows(rows: list[dict], tasks: list[str], extraction: str = "flexible") -> None:
    """Fill verdict / predicted_answer / format_ok in place. A path cut at max_tokens that does not
    grade correct is ``truncated``: whatever its last sentence says, it did not finish."""

    task_at = {id(r): t for r, t in zip(rows, tasks)}
    verdicts = grade_rows(rows, extraction=extraction, task=lambda r: task_at[id(r)])
    for row, v, task in zip(rows, verdicts, tasks):
        row["verdict"] = v.verdict
        if row.get("finish_reason") == "length" and v.verdict != CORRECT:
            row["verdict"] = TRUNCATED
        row["predicted_answer"] = v.predicted_answer
        row["format_ok"] = format_ok(row["completion"], task)


def _add_pass_rates(rows: list[dict]) -> None:
    totals: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        t = totals.setdefault((r["problem_id"], r["generator"]), [0, 0])
        t[0] += r["verdict"] == "correct"
        t[1] += 1
    for r in rows:
        c, n = totals[(r["problem_id"], r["generator"])]
        r["pass_rate"] = c / n


def _verdict_counts(rows: list[dict]) -> dict[str, int]:

    counts = dict.fromkeys(VERDICTS, 0)
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts


@distributed.stage
def collect(cfg: CollectConfig) -> CollectSummary:
    """Run the collection (or merge finished shards); returns the summary with `output_dir`."""
    if cfg.merge_shards:
        return merge_shards(cfg)

    start = time.perf_counter()
    out_dir = distributed.shard_output(cfg.output_dir, cfg.shard)
    # The problems are read a line at a time where the source allows (`iter_problems`), never all
    # at once: first to check every row (a bad one fails before any request is sent) and note a
    # digest of each prompt, then as the engine draws its requests, then in step with the results;
    # a source that changes between the passes is refused (`_same_problem`).
    digests, first = array("Q"), None
    for p in iter_problems(cfg):
        first = p if first is None else first
        digests.append(_prompt_digest(p))
    if first is None and not cfg.shard:
        raise InvalidInputError(f"No problems to collect from (problems={cfg.problems!r}).")
    config_name = config_name_for(cfg, [first] if first is not None else [])
    del first
    gens = generator_configs(cfg)
    cache_root = out_dir / ".cache" / "requests"  # `.cache/` is never pushed
    generated: list[tuple[str, SamplingParams, Sequence]] = []
    gen_summaries: dict[str, Any] = {}
    outcome = RequestOutcome(RECIPE)
    n_problems = len(digests)  # every pass must read these (`_same_problem`)
    for name, engine_cfg, sampling in gens:

        def requests(sampling: SamplingParams = sampling) -> Iterator[GenerationRequest]:
            k = -1
            for k, p in enumerate(iter_problems(cfg)):
                _same_problem(cfg, digests, k, p)
                yield GenerationRequest(p.problem_id, problem_prompt(p), sampling)
            _same_problem(cfg, digests, k + 1, None)

        cache_path = cache_root / f"{_slug(name)}.jsonl"
        total = n_problems * sampling.n
        with distributed.make_engine(engine_cfg, cache_path=cache_path) as engine:
            results = engine.generate(requests(), desc=f"collect [{name}]", total=total)
            gen_summaries[name] = engine.last_summary
        if len(results) != total:
            raise RuntimeError(
                f"collect [{name}]: {len(results)} results for {n_problems} problems x {sampling.n}."
            )
        outcome.add(results, engine.last_summary)
        generated.append((name, sampling, results))
    # Before anything is written: a run whose requests failed never replaces finished rows.
    guard_publish(outcome, out_dir, RECIPE, config_name, [config_name, f"{config_name}-samples"])
    failed = outcome.failed  # (the failed results of every generator)

    def graded_batches() -> Iterator[list[dict]]:
        """The sample rows, graded, a few whole problems at a time (a problem's paths share a batch:
        its pass rate is per problem); results are read back from the engine's spool a batch at a
        time, in step with a second pass over the problems (request k is problem k)."""
        for name, sampling, results in generated:
            problems, at, p = iter_problems(cfg), -1, None
            for lo, hi in _problem_slices(results, _BATCH_ROWS):
                rows, tasks = [], []
                for k, res in enumerate(results[lo:hi], lo):
                    if k // sampling.n != at:
                        at, p = k // sampling.n, next(problems, None)
                        _same_problem(cfg, digests, at, p)
                    if res.request_id != p.problem_id:
                        raise RuntimeError(
                            f"collect: result {k} answers {res.request_id}, not problem {p.problem_id}."
                        )
                    if res.error is None:
                        rows.append(_sample_row(p, name, sampling, res))
                        tasks.append(task_of(p))
                _grade_rows(rows, tasks, cfg.extraction)
                _add_pass_rates(rows)
                yield rows

    summary = _write(
        out_dir,
        config_name,
        graded_batches(),
        cfg,
        extra={
            "problems": n_problems,
            "failed_requests": failed,
            "requests": {config_name: outcome.record()},
            "shard": cfg.shard,
            "generators": {
                n: {k: v for k, v in s.items() if k not in ("model",)} for n, s in gen_summaries.items()
            },
            "wall_s": round(time.perf_counter() - start, 2),
            **distributed.record(),  # under `accelerate launch`: world size, each rank's slice
        },
    )
    _log_summary(summary)
    return summary


def merge_shards(cfg: CollectConfig) -> CollectSummary:
    """Concatenate finished shard folders into `output_dir`, in the order an unsharded run writes.

    Refused before anything is written: shards run with other data settings than this command
    (`distributed.check_merge_config`), or problems that cannot be reloaded to restore the order.
    The summary has an unsharded run's keys: the request records and each generator's engine
    statistics added up over the shards; `wall_s` is the shards' added up plus the merge's own.
    """

    start = time.perf_counter()
    base = Path(cfg.output_dir)
    shards = distributed.read_shards(base, RECIPE)
    distributed.check_merge_config(shards, RECIPE, cfg)
    # An empty shard (more shards than problems) has no samples, and a config name of its own.
    config_name = distributed.shard_value([s for s in shards if s.summary.get("samples")], "config_name")
    rows = [r for s in shards for r in s.rows(f"{config_name}-samples")]
    rows = _unsharded_order(rows, cfg)
    names = [name for name, _, _ in generator_configs(cfg)]
    generators = {
        name: distributed.merged_engine_stats([(s.summary.get("generators") or {}).get(name) for s in shards])
        for name in names
    }
    summary = _write(
        base,
        config_name,
        (rows[i : i + _BATCH_ROWS] for i in range(0, len(rows), _BATCH_ROWS)),
        cfg,
        extra={
            "problems": sum(s.summary.get("problems", 0) for s in shards),
            "failed_requests": sum(s.summary.get("failed_requests", 0) for s in shards),
            "requests": distributed.merged_requests(shards, config_name) or {},
            "shard": None,
            "generators": {n: g for n, g in generators.items() if g is not None},
            **distributed.merged_wall_s(shards, start),
            "merged_shards": len(shards),
        },
    )
    _log_summary(summary)
    return summary


def _unsharded_order(rows: list[dict], cfg: CollectConfig) -> list[dict]:
    """Rows in the order an unsharded run writes them: generator, then problem, then sample index.

    The problems are reloaded (all of them: no shard) for their order; a source that cannot be
    reloaded, or that lacks a problem of the shards, is refused rather than kept in shard order.
    """

    try:
        problems = load_problems(dataclasses.replace(cfg, shard=None))
    except Exception as exc:  # noqa: BLE001 - any reason the source is unreadable is the user's to fix
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InvalidInputError(
            f"collect: cannot reload the problems ({cfg.problems_path or cfg.problems}) to restore the "
            f"unsharded order: {reason}"
        ) from exc
    order = {p.problem_id: i for i, p in enumerate(problems)}
    unknown = sorted({r["problem_id"] for r in rows} - order.keys())
    if unknown:
        raise InvalidInputError(
            f"collect: {len(unknown)} problem(s) of the shards (e.g. {unknown[0]!r}) are not in the "
            f"problems of this command ({cfg.problems_path or cfg.problems}); merge with the shards' command."
        )
    gens = {name: i for i, (name, _, _) in enumerate(generator_configs(cfg))}
    return sorted(
        rows,
        key=lambda r: (gens.get(r["generator"], len(gens)), order[r["problem_id"]], r["sample_index"]),
    )


def _write(
    out_dir: Path, config_name: str, batches: Iterable[list[dict]], cfg: CollectConfig, extra: dict[str, Any]
) -> CollectSummary:
    """Stream graded sample rows (in batches of whole problems) to `<task>-samples`, their
    de-duplicated mistakes to `<task>`; the counts are summed per batch. Only one batch of rows is
    in memory at a time; an exception while the batches are produced changes nothing on disk."""

    features = sample_features()
    verdicts = dict.fromkeys(VERDICTS, 0)
    samples = mistakes = dupes = formatted = prompt_tokens = completion_tokens = 0
    seen = DigestIndex()
    # The inner writer finishes first, so `<task>-samples` is listed first in the YAML, as before;
    # the group lists both at once (a kill never leaves one run's samples with another's mistakes).
    with (
        ConfigGroup(out_dir) as group,
        DatasetConfigWriter(out_dir, config_name, mistake_features(), group=group) as mistake_writer,
        DatasetConfigWriter(out_dir, f"{config_name}-samples", features, group=group) as sample_writer,
    ):
        for rows in batches:
            rows = conform_in_place(rows, features)
            kept, d = select_mistakes(rows, cfg.include_unfinished, seen)
            sample_writer.write(rows)
            mistake_writer.write(kept)
            samples += len(rows)
            mistakes += len(kept)
            dupes += d
            for v, n in _verdict_counts(rows).items():
                verdicts[v] = verdicts.get(v, 0) + n
            formatted += sum(bool(r.get("format_ok")) for r in rows)
            prompt_tokens += sum(r.get("prompt_tokens") or 0 for r in rows)
            completion_tokens += sum(r.get("completion_tokens") or 0 for r in rows)
    kept_verdicts = mistake_verdicts(cfg.include_unfinished)
    summary: CollectSummary = {
        "output_dir": str(out_dir),
        "config_name": config_name,
        "samples_config": f"{config_name}-samples",
        "samples": samples,
        **verdicts,
        "mistakes": mistakes,
        "duplicates_removed": dupes,
        "extraction": cfg.extraction,
        "include_unfinished": cfg.include_unfinished,
        "set_aside": {v: n for v, n in verdicts.items() if v != "correct" and v not in kept_verdicts and n},
        "format_ok": formatted,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        **extra,
    }
    # Shards are pushed once merged.
    finish(out_dir, "mistakes", cfg, summary, recipe=RECIPE, card=cfg.write_card, push=not cfg.shard)
    return summary


def _sample_row(p: Any, generator: str, sampling: SamplingParams, res: Any) -> dict:
    """The `<task>-samples` row of one generated path, before grading."""
    return {
        **p.to_dict(),
        "generator": generator,
        "sample_index": res.sample_index,
        "sampling": sampling.record(),
        "completion": res.text,
        "steps": split_steps(res.text),
        "predicted_answer": None,
        "verdict": "ungradeable",
        "format_ok": None,
        "finish_reason": res.finish_reason,
        "prompt_tokens": res.prompt_tokens,
        "completion_tokens": res.completion_tokens,
    }


def _problem_slices(results: Sequence, max_rows: int) -> Iterator[tuple[int, int]]:
    """[lo, hi) ranges of `results` (the engine's order: each request's samples together) holding
    whole requests, about `max_rows` results each (one request's samples are never split)."""
    lo = 0
    n = len(results)
    while lo < n:
        hi = min(n, lo + max_rows)
        while hi < n and results[hi].request_id == results[hi - 1].request_id:
            hi += 1
        yield lo, hi
        lo = hi


_ASIDE_WHY = {
    "truncated": "cut at max_tokens",
    "no_answer": "no final answer",
    "ungradeable": "gold unreadable",
}


def set_aside_text(summary: dict[str, Any]) -> str:
    """``"set aside: 36 truncated (cut at max_tokens), 12 no_answer (no final answer)"``: the paths
    that are neither correct nor kept as mistakes, and why; ``""`` when there are none."""
    aside = summary.get("set_aside") or {}
    if not aside:
        return ""
    return "set aside: " + ", ".join(f"{n} {v} ({_ASIDE_WHY.get(v, v)})" for v, n in aside.items())


def _log_summary(s: dict[str, Any]) -> None:

    merged = f" (merged {s['merged_shards']} shards)" if "merged_shards" in s else ""
    counts = ", ".join(f"{s.get(v, 0)} {v}" for v in VERDICTS if s.get(v) or v in ("correct", "wrong"))
    aside = set_aside_text(s)
    print(
        f"collect: {s['problems']} problems, {s['samples']} paths ({counts}), {s['mistakes']} mistakes kept "
        f"({s['duplicates_removed']} duplicates removed{'; ' + aside if aside else ''}), "
        f"{s['failed_requests']} failed requests, {s.get('wall_s', 0.0):.1f} s -> {s['output_dir']}{merged}",
        file=sys.stderr,
    )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "generator"
