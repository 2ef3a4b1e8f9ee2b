"""Generation stages on several processes and nodes: `accelerate launch` ranks, or Slurm array shards.

Under `accelerate launch` (or `torchrun`: anything that sets `RANK` / `WORLD_SIZE`), a stage decorated
with `@stage` runs its own code on the main process only. Every `Engine.generate` call it makes
through `make_engine` is split between the ranks: the main process broadcasts the requests, each rank
takes its contiguous slice (`PartialState.split_between_processes`), runs its own backend on it (its
own GPU: `CUDA_VISIBLE_DEVICES` narrowed to the local rank's block; its own endpoints: `base_urls`
split by rank when there are enough of them) with its own request cache file (the rank's shard,
`<cache>.rank-0000r-of-0000n.jsonl`, which makes a killed rank resume), and the main process gathers
the slices in rank order. Grading, de-duplication, writing and the card then run once, on the merged
results, so the dataset is the one a single process writes: same rows, same order, same card.
The process group is gloo (CPU), used only to coordinate; it works on GPU nodes too.

`--shard i/n` (collect, correct, evolve, evaluate) stays for schedulers that start independent jobs
(Slurm arrays): job i of n takes its slice (`shard_slice`: the contiguous slice rank i of n takes;
collect's and evaluate's problems: every n-th, `problems.load_problems`), writes
`<output_dir>-shard-0000i-of-0000n` (`shard_output`) and never pushes; `--merge_shards true` reads
the complete set (`read_shards`, which refuses a missing or unfinished shard; `check_merge_config`,
which refuses a merge command whose data settings are not the ones each shard recorded) and writes
the real artifact, rows in the order one process writes them, with the shards' request records and
engine statistics added up (`merged_requests`, `merged_engine_stats`).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from lema_hub.errors import InvalidInputError, MissingInputError

logger = logging.getLogger(__name__)

# Ranks wait for each other while the slowest rank finishes its slice: hours at paper scale.
PROCESS_GROUP_TIMEOUT = timedelta(hours=24)
EXIT_TIMEOUT = timedelta(minutes=5)
_STOP, _GENERATE, _CLOSE = "stop", "generate", "close"
T = TypeVar("T")
_SUM_KEYS = ("samples", "cached", "generated", "failed", "prompt_tokens", "completion_tokens")
_SUM_KEYS += ("hedges", "hedge_wins")  # the engine's hedged requests


@dataclass(frozen=True)
class World:
    """This process's place among the launched processes (1 of 1 when nothing launched several)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """Rank and world size from the launcher's environment (`accelerate launch`, `torchrun`)."""

    def env(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        return int(value) if value.strip().isdigit() else default

    size = env("WORLD_SIZE", 1)
    local_size = env("LOCAL_WORLD_SIZE", size)
    return World(env("RANK", 0), size, env("LOCAL_RANK", 0), local_size)


# ------------------------------------------------------------------------------------ Slurm shards
def parse_shard_spec(spec: str | None) -> tuple[int, int] | None:
    """`"i/n"` -> (i, n), or None without a shard; a bad spec (`3/2`) is an `InvalidInputError`."""
    from lema_hub.problems import parse_shard  # deferred: lema_hub.problems imports the artifacts

    return parse_shard(spec) if spec else None


def check_shard_args(shard: str | None, merge_shards: bool) -> None:
    """Config-time check of a stage's `shard` / `merge_shards` (one clear line, exit 2, when wrong)."""
    parse_shard_spec(shard)
    if merge_shards and shard:
        raise InvalidInputError("merge_shards merges every shard: run it without --shard.")


def shard_dir(output_dir: str | Path, index: int, count: int) -> Path:
    """The folder of shard `index` of `count` of `output_dir` (a `--shard i/n` run writes there)."""
    return Path(f"{output_dir}-shard-{index:05d}-of-{count:05d}")


def shard_output(output_dir: str | Path, shard: str | None) -> Path:
    """Where a run writes: its shard folder with `--shard i/n`, else `output_dir` itself."""
    spec = parse_shard_spec(shard)
    return shard_dir(output_dir, *spec) if spec else Path(output_dir)


def shard_bounds(length: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count` over `length` items: contiguous, and the first
    `length % count` shards get one more (the split `PartialState.split_between_processes` makes)."""
    per, extra = divmod(length, count)
    start = index * per + min(index, extra)
    return start, start + per + (index < extra)


def shard_range(length: int, shard: str | None) -> tuple[int, int]:
    """[start, stop) of this shard's contiguous slice of `length` items ([0, length) without a shard)."""
    spec = parse_shard_spec(shard)
    return (0, length) if spec is None else shard_bounds(length, *spec)


def shard_slice(items: Sequence[T], shard: str | None) -> list[T]:
    """This shard's contiguous slice of `items` (all of them without a shard), in order: the shards'
    slices concatenated in shard order are `items`, so merging is concatenating."""
    start, stop = shard_range(len(items), shard)
    return list(items[start:stop])


def finished_shards(output_dir: str | Path, done_file: str = "run_summary.json") -> list[Path]:
    """Every shard folder of `output_dir`, in shard order; raises unless all n have finished."""
    base = Path(output_dir)
    found = sorted(base.parent.glob(f"{base.name}-shard-*-of-*"))
    if not found:
        raise MissingInputError(f"No shard folders {base}-shard-*-of-* to merge.")
    counts = {re.search(r"-of-(\d+)$", p.name).group(1) for p in found}
    if len(counts) != 1:
        raise InvalidInputError(
            f"Shard folders of different shard counts next to {base}: {[p.name for p in found]}."
        )
    n = int(counts.pop())
    expected = [shard_dir(base, i, n) for i in range(n)]
    missing = [p.name for p in expected if not (p / done_file).is_file()]
    if missing:
        raise MissingInputError(f"Shard(s) not finished (no {done_file}): {', '.join(missing)}.")
    return expected


@dataclass(frozen=True)
class FinishedShard:
    """One finished shard folder and the run summary its stage recorded there."""

    folder: Path
    summary: dict[str, Any]

    def rows(self, config: str, split: str = "train") -> list[dict]:
        """Rows of one of its configs; [] when the shard wrote none (an empty slice, an empty side)."""
        from lema_hub.artifacts import load_rows

        return load_rows(str(self.folder), config, split, missing_ok=True)

    def stream(self, config: str, split: str = "train") -> Any:
        """`rows` as `artifacts.StreamedRows`: read from disk a batch at a time on each pass."""
        from lema_hub.artifacts import stream_rows

        return stream_rows(str(self.folder), config, split, missing_ok=True)


def read_shards(output_dir: str | Path, recipe: str) -> list[FinishedShard]:
    """The complete, finished shard set of `output_dir` in shard order, each with `recipe`'s summary.

    A shard whose requests partly failed wrote its rows (a first, partial run) but is not done: the
    merge refuses it, as it refuses a missing one, rather than publish a dataset with rows missing.
    """
    from lema_hub.artifacts import read_run_record

    shards, failed = [], []
    for folder in finished_shards(output_dir):
        summary = read_run_record(folder)[1].get(recipe)
        if not isinstance(summary, dict):
            raise InvalidInputError(f"Shard {folder} has no `{recipe}` run summary: not a {recipe} shard.")
        records = (summary.get("requests") or {}).values()
        n = sum(int(r.get("failed", 0) or 0) for r in records if isinstance(r, dict))
        if n:
            failed.append(f"{folder.name} ({n})")
        shards.append(FinishedShard(folder, summary))
    if failed:
        raise InvalidInputError(
            f"Shard(s) with failed requests: {', '.join(failed)}; rerun each with its --shard "
            "(finished requests come from its cache), then merge."
        )
    return shards


def shard_value(shards: Sequence[FinishedShard], key: str) -> Any:
    """The summary value `key` the shards agree on (a shard that did not record it is skipped)."""
    values = {json.dumps(s.summary[key], sort_keys=True) for s in shards if s.summary.get(key) is not None}
    if len(values) > 1:
        found = {s.folder.name: s.summary.get(key) for s in shards}
        raise InvalidInputError(f"The shards disagree on `{key}`: {found}; rerun them with one config.")
    return json.loads(values.pop()) if values else None


# Settings a merge may differ from its shards in: where the run writes, how it is published, and
# how the engine reaches its endpoints and how fast (never what it asks or how the rows are graded).
# Every other setting determines the data, so a merge whose value differs is refused.
MERGE_FREE_KEYS = frozenset(
    {
        "output_dir", "shard", "merge_shards", "push_to_hub", "hub_repo_id", "hub_private",
        "hub_revision", "progress", "write_card", "update_model_card", "cache_dir", "price_table", "corrector_benchmark",
        "grading_workers", "base_urls", "api_key_env", "concurrency", "batch_size", "max_retries",
        "request_timeout", "retry_base_delay", "retry_max_delay", "hedge_quantile", "hedge_after_s",
        "max_hedges",
    }
)  # fmt: skip


def _data_part(value: Any) -> Any:
    """`value` without MERGE_FREE_KEYS in its mappings (e.g. a `generators:` entry's `concurrency`)."""
    if isinstance(value, dict):
        return {k: _data_part(v) for k, v in value.items() if k not in MERGE_FREE_KEYS}
    if isinstance(value, list):
        return [_data_part(v) for v in value]
    return value


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_merge_config(
    shards: Sequence[FinishedShard], recipe: str, cfg: Any, record: dict[str, Any] | None = None
) -> None:
    """Refuse (one line, `InvalidInputError`) a merge command whose data settings are not the shards'.

    Each shard recorded its config (`lema_hub_config.yaml`, keyed by `recipe`); the merge's config,
    recorded the same way (credentials redacted, local paths shortened relative to the shard folder),
    must match it in every field but MERGE_FREE_KEYS. `record`: the config as the stage records it,
    when that is not `cfg` as a dict (`finish(record=...)`). A field a shard did not record (a shard
    written before the field existed) is not compared.
    """
    from lema_hub.artifacts import read_run_record, sanitize
    from lema_hub.configs import config_to_dict, redact

    mine = redact(config_to_dict(cfg) if record is None else record)
    for shard in shards:
        recorded = read_run_record(shard.folder)[0].get(recipe)
        if not isinstance(recorded, dict):
            raise InvalidInputError(
                f"{recipe}: shard {shard.folder} has no `{recipe}` config in lema_hub_config.yaml; "
                "rerun that shard."
            )
        ours = sanitize(mine, shard.folder)
        for key, value in ours.items():
            if key in MERGE_FREE_KEYS or key not in recorded:
                continue
            theirs, want = _data_part(recorded[key]), _data_part(value)
            if theirs != want:
                raise InvalidInputError(
                    f"{recipe}: the shards ran with {key}={_short(theirs)} ({shard.folder.name}), this "
                    f"merge with {key}={_short(want)}; merge with the shards' command."
                )


def merged_engine_stats(summaries: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The shards' `Engine.last_summary` records as one: counts (hedges, hedge_wins ...) added up,
    `wall_s` the shards' engine seconds added up, rates per engine second; None when none has one."""
    found = [s for s in summaries if s]
    if not found:
        return None
    return merge_summaries(found, sum(float(s.get("wall_s") or 0) for s in found))


def merged_wall_s(shards: Sequence[FinishedShard], merge_start: float) -> dict[str, float]:
    """`wall_s`: the shards' run times added up plus the merge's own; `merge_wall_s`: the merge's own."""
    own = time.perf_counter() - merge_start
    total = sum(float(s.summary.get("wall_s") or 0) for s in shards) + own
    return {"wall_s": round(total, 2), "merge_wall_s": round(own, 2)}


def merged_requests(shards: Sequence[FinishedShard], key: str) -> dict[str, Any] | None:
    """`{key: record}`: the shards' `requests` records for `key` added up (None when none has one)."""
    records = [(s.summary.get("requests") or {}).get(key) for s in shards]
    return {key: add_counts(records)} if any(records) else None


def add_counts(records: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Numbers added key by key, nested mappings (token counts, failure causes, drops) alike."""
    out: dict[str, Any] = {}
    for record in records:
        for key, value in (record or {}).items():
            if isinstance(value, dict):
                out[key] = add_counts([out.get(key) or {}, value])
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
    return out


# ------------------------------------------------------------------------------------ rank helpers
def rank_slice(items: Sequence[Any], w: World) -> list[Any]:
    """This rank's contiguous slice (the first `len % size` ranks get one more), in order."""
    if w.size == 1:
        return list(items)
    from accelerate import PartialState

    with PartialState().split_between_processes(list(items)) as mine:
        return list(mine)


def rank_cache_path(path: str | Path | None, w: World) -> Path | None:
    """The rank's own request cache (its shard of the results) next to the stage's cache file."""
    if path is None or w.size == 1:
        return Path(path) if path is not None else None
    path = Path(path)
    return path.with_name(f"{path.stem}.rank-{w.rank:05d}-of-{w.size:05d}{path.suffix}")


def rank_base_urls(urls: list[str] | None, w: World) -> list[str] | None:
    """Endpoints of this rank: every size-th one when there are at least as many as ranks, else all."""
    if not urls or len(urls) < w.size:
        return urls
    return list(urls[w.rank :: w.size])


def bind_devices(w: World) -> list[str] | None:
    """Narrow `CUDA_VISIBLE_DEVICES` to this local rank's block of GPUs (before CUDA is initialised).

    With g visible GPUs and p processes on the node, local rank r sees GPUs [r*g/p, (r+1)*g/p): its
    own GPU for transformers, its own tensor-parallel group for vLLM. No-op without enough GPUs.
    """
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not visible and "CUDA_VISIBLE_DEVICES" not in os.environ:
        try:
            import torch

            visible = [str(i) for i in range(torch.cuda.device_count())]  # NVML: CUDA stays uninitialised
        except Exception:  # noqa: BLE001 - no torch / no driver: nothing to bind
            visible = []
    if w.local_size < 2 or len(visible) < w.local_size:
        return None
    per = len(visible) // w.local_size
    mine = visible[w.local_rank * per : (w.local_rank + 1) * per]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    return mine


def merge_summaries(summaries: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """One `Engine.last_summary` for the ranks' slices, with the keys a single process reports."""
    if not summaries:
        return {}
    out = dict(summaries[0])
    for key in _SUM_KEYS:
        out[key] = sum(int(s.get(key, 0) or 0) for s in summaries)
    reasons: dict[str, int] = {}
    for s in summaries:
        for k, v in (s.get("failure_reasons") or {}).items():
            reasons[k] = reasons.get(k, 0) + v
    out["failure_reasons"] = reasons
    out["wall_s"] = round(wall, 3)
    new_tokens = sum(float(s.get("tokens_per_s", 0)) * float(s.get("wall_s", 0)) for s in summaries)
    out["requests_per_s"] = round((out["generated"] + out["failed"]) / wall, 2) if wall > 0 else 0.0
    out["tokens_per_s"] = round(new_tokens / wall, 2) if wall > 0 else 0.0
    return out


# ------------------------------------------------------------------------------------ the ranks
_state: dict[str, Any] = {"world": None, "devices": None, "calls": [], "depth": 0}


def _init(w: World) -> None:
    """Join the gloo process group once (binding this rank's GPUs first)."""
    if _state["world"] is not None:
        return
    _state["devices"] = bind_devices(w)
    from accelerate import PartialState

    PartialState(cpu=True, timeout=PROCESS_GROUP_TIMEOUT)
    _state["world"] = w
    atexit.register(_shutdown)


def _shutdown() -> None:
    """Leave the process group together: a rank exiting while a peer still holds it can abort."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:
        dist.monitored_barrier(timeout=EXIT_TIMEOUT)
    except RuntimeError as exc:  # a peer died or never arrived: nothing left to wait for
        logger.warning("Ranks did not all reach the exit barrier: %s", exc)
    dist.destroy_process_group()


def _broadcast(message: Any) -> Any:
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([message], from_process=0)[0]


def _gather(obj: Any, w: World) -> list[Any] | None:
    import torch.distributed as dist

    out = [None] * w.size if w.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def _run_slice(
    engines: dict[int, Any],
    engine_id: int,
    config: Any,
    cache: str | None,
    requests: list,
    desc: str,
    w: World,
) -> dict[str, Any]:
    """Generate this rank's slice with its own engine; the shard that goes to the main process."""
    from lema_hub.generation import make_engine  # inside: this module's own make_engine shadows the name

    mine = rank_slice(requests, w)
    shard: dict[str, Any] = {
        "rank": w.rank,
        "pid": os.getpid(),
        "devices": _state["devices"],
        "requests": len(mine),
    }
    try:
        if engine_id not in engines:
            own = dataclasses.replace(
                config, base_urls=rank_base_urls(config.base_urls, w), progress=config.progress and w.is_main
            )
            engines[engine_id] = make_engine(own, cache_path=rank_cache_path(cache, w))
        engine = engines[engine_id]
        shard["results"] = engine.generate(mine, desc=f"{desc} [rank {w.rank}/{w.size}]")
        shard["summary"] = dict(engine.last_summary)
    except Exception as exc:  # noqa: BLE001 - reported by the main process, which fails the run
        shard["error"] = f"{type(exc).__name__}: {exc}"[:500]
        shard["results"], shard["summary"] = [], {}
    shard["samples"] = len(shard["results"])
    return shard


def _serve(w: World) -> dict[str, Any]:
    """A non-main rank: generate the slices the main process sends until it says stop."""
    engines: dict[int, Any] = {}
    try:
        while True:
            message = _broadcast(None)
            if message[0] == _STOP:
                break
            if message[0] == _CLOSE:
                engine = engines.pop(message[1], None)
                if engine is not None:
                    engine.close()
                continue
            _, engine_id, config, cache, requests, desc = message
            _gather(_run_slice(engines, engine_id, config, cache, requests, desc, w), w)
    finally:
        for engine in engines.values():
            engine.close()
    return {"rank": w.rank, "world_size": w.size, "main_process": False}


class RankEngine:
    """`Engine`'s interface on the main process; each `generate` call is shared by every rank."""

    _ids = 0

    def __init__(self, config: Any, cache_path: str | Path | None, w: World) -> None:
        RankEngine._ids += 1
        self.id = RankEngine._ids
        self.config = config
        self.cache_path = str(cache_path) if cache_path is not None else None
        self.world = w
        self._engines: dict[int, Any] = {}
        self.last_summary: dict[str, Any] = {}

    def generate(
        self, requests: Iterable[Any], desc: str = "generating", total: int | None = None
    ) -> list[Any]:
        start = time.perf_counter()
        requests = list(requests)
        _broadcast((_GENERATE, self.id, self.config, self.cache_path, requests, desc))
        mine = _run_slice(self._engines, self.id, self.config, self.cache_path, requests, desc, self.world)
        shards = _gather(mine, self.world)
        errors = [f"rank {s['rank']}: {s['error']}" for s in shards if "error" in s]
        if errors:
            raise RuntimeError(f"{desc}: generation failed on {len(errors)} rank(s): " + "; ".join(errors))
        results = [r for s in shards for r in s["results"]]  # contiguous slices: rank order is request order
        self.last_summary = merge_summaries([s["summary"] for s in shards], time.perf_counter() - start)
        _state["calls"].append(
            {
                "desc": desc,
                "ranks": [{k: v for k, v in s.items() if k not in ("results", "summary")} for s in shards],
            }
        )
        print(
            f"{desc}: {len(requests)} requests on {self.world.size} ranks "
            f"({', '.join(str(s['requests']) for s in shards)}), {len(results)} samples gathered",
            file=sys.stderr,
        )
        return results

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        _broadcast((_CLOSE, self.id))

    def __enter__(self) -> RankEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_engine(config: Any, cache_path: str | Path | None = None) -> Any:
    """`generation.make_engine`, or on the main process of a launched stage, one shared by the ranks."""
    w = _state["world"]
    if w is None or w.size == 1 or not _state["depth"]:  # the other ranks serve only inside a stage
        from lema_hub.generation import make_engine as single

        return single(config, cache_path=cache_path)
    return RankEngine(config, cache_path, w)


def record() -> dict[str, Any]:
    """`{"distributed": ...}` for a stage's run summary (world size, each rank's slice); {} on one process."""
    w = _state["world"]
    if w is None or w.size == 1:
        return {}
    return {"distributed": {"world_size": w.size, "calls": list(_state["calls"])}}


def stage(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a generation stage on every launched rank: the main process runs `fn`, the others serve."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        w = world()
        if w.size == 1 or _state["depth"]:  # one process, or a stage inside a running stage
            return fn(*args, **kwargs)
        _init(w)
        if not w.is_main:
            return _serve(w)
        _state["calls"], _state["depth"] = [], 1
        try:
            return fn(*args, **kwargs)
        finally:
            _state["depth"] = 0
            _broadcast((_STOP,))

    return wrapper
