"""Correction-centric evolution (LeMa §3.2): new questions grown from the questions models got wrong.

Seeds are K questions sampled with replacement from the accepted corrections (`correction_centric`),
or uniformly from all problems (`general`, the paper's baseline). An LLM writes one new question per
seed (the project's own evolution prompt, with the paper's constraints); the new question is answered
`num_answers` (3) times with the CoT prompt; the majority answer becomes gold, and questions without
a majority are dropped. The result is a folder of `Problem` rows (`source: evolved`) that
`lema-hub collect` reads back as `problems`.

Slurm arrays: `--shard i/n` evolves the i-th contiguous slice of the K seed draws (each draw keeps
its index, so its request and sampling seed are the unsharded run's) into
`<output_dir>-shard-i-of-n`, with `evolve_draws.jsonl` saying what became of each draw; then
`--merge_shards true` concatenates the shards and drops, as one process would have, a new question
that duplicates one from an earlier shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lema_hub import distributed, formats
from lema_hub.artifacts import HubArgs, load_rows, main_config, save_dataset_config
from lema_hub.errors import InvalidInputError, MissingInputError
from lema_hub.generation import GenerationRequest, SamplingParams
from lema_hub.generation.types import EndpointArgs
from lema_hub.grading import answer_key, extract_answer
from lema_hub.problems import ProblemArgs, load_problems, task_of
from lema_hub.publish import finish
from lema_hub.run_guard import RequestOutcome, guard_publish
from lema_hub.schema import BACKENDS, CHOICE_TASK, DEFAULT_MODEL, PROMPT_STYLES

logger = logging.getLogger(__name__)

STRATEGIES = ("correction_centric", "general")
DROP_REASONS = (
    "generation_failed",
    "empty_question",
    "same_as_seed",
    "duplicate",
    "no_answers",
    "no_majority",
)
_PLACEHOLDER = "{question}"
DRAWS_FILE = "evolve_draws.jsonl"  # a shard's record of each seed draw, read by `merge_shards`


@dataclass
class EvolveConfig(ProblemArgs, HubArgs, EndpointArgs):
    """`lema-hub evolve`: new problems from seeds, labelled by majority vote."""

    strategy: str = field(
        default="correction_centric",
        metadata={
            "help": "correction_centric (seeds from accepted corrections, the paper) | general (seeds from all problems)"
        },
    )
    corrections: str | None = field(
        default=None, metadata={"help": "Corrections folder or Hub id (seeds for correction_centric)"}
    )
    corrections_config: str | None = field(
        default=None,
        metadata={"help": "Config of the corrections folder to read (default: its main config)."},
    )
    num_seeds: int = field(default=100, metadata={"help": "k seeds, sampled with replacement"})
    seed: int = field(default=0, metadata={"help": "Random seed (sampling, shuffling)."})
    evolution_prompt_file: str | None = field(
        default=None, metadata={"help": "A text file with a `{question}` placeholder"}
    )
    backend: str = field(default="transformers", metadata={"help": " | ".join(BACKENDS)})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Writes the new questions"})
    answer_model: str | None = field(default=None, metadata={"help": "Answers them (default: `model`)"})
    prompt_style: str = field(default="chat", metadata={"help": " | ".join(PROMPT_STYLES)})
    evolve_temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature when writing evolved questions."}
    )
    evolve_max_tokens: int = field(default=256, metadata={"help": "Max new tokens for an evolved question."})
    num_answers: int = field(
        default=3, metadata={"help": "Answers sampled per evolved question (majority vote labels it)."}
    )
    answer_temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature of the answers used for the vote."}
    )
    answer_max_tokens: int = field(default=512, metadata={"help": "Max new tokens per answer."})
    similarity_threshold: float = field(
        default=0.8, metadata={"help": 'Word-set Jaccard with the seed at or above which it is "the same"'}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Default: outputs/<task>/evolved"})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Default: the seeds' config name"}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    merge_shards: bool = field(
        default=False,
        metadata={
            "help": "Merge the finished <output_dir>-shard-* folders (from --shard i/n: the i-th "
            "contiguous slice of the seed draws) into output_dir instead of evolving"
        },
    )

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}."
            )
        distributed.check_shard_args(self.shard, self.merge_shards)
        if self.num_seeds < 1:
            raise InvalidInputError(f"num_seeds must be >= 1, got {self.num_seeds}.")
        if self.num_answers < 2:
            raise InvalidInputError(f"num_answers must be >= 2 for a majority vote, got {self.num_answers}.")
        if self.strategy == "correction_centric" and not self.corrections:
            raise InvalidInputError(
                "strategy correction_centric needs `corrections` (a corrections folder or Hub id)."
            )


def evolution_prompt(prompt_file: str | None = None) -> str:
    """The evolution prompt template (the project's own, or `prompt_file`), with a `{question}` slot."""
    if prompt_file:
        path = Path(prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"evolution_prompt_file {prompt_file!r} does not exist.")
        text = path.read_text(encoding="utf-8")
    else:
        text = resources.files("lema_hub").joinpath("prompts", "evolution.txt").read_text(encoding="utf-8")
    if _PLACEHOLDER not in text:
        raise InvalidInputError(f"The evolution prompt must contain the placeholder {_PLACEHOLDER}.")
    return text


def parse_new_question(text: str | None) -> str | None:
    """The new question from the evolver's output (label, solution and extra problems cut off)."""
    if not text:
        return None
    t = text.replace("\r\n", "\n").replace("**", "").strip()
    t = re.sub(r"^\s*(?:new\s+(?:problem|question)\s*:)\s*", "", t, flags=re.I)
    t = re.split(
        r"\n\s*\n|\n\s*(?:answer|solution|seed problem|new problem|new question|step 1)\s*[:.]",
        t,
        maxsplit=1,
        flags=re.I,
    )[0]
    t = " ".join(t.split())
    return t if re.search(r"[A-Za-z]", t) else None


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def similarity(a: str, b: str) -> float:
    wa, wb = _words(a), _words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def majority(answers: list[str | None], task: str = "gsm8k") -> tuple[str | None, int]:
    """(majority answer, votes): the largest group of equivalent answers if it is strictly the
    largest and has at least 2 votes; else (None, votes of the largest group)."""

    keys = [answer_key(a, task) if a else None for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, 0
    (top, n), *rest = counts.most_common()
    if n < 2 or (rest and rest[0][1] == n):
        return None, n
    return answers[keys.index(top)], n


def _seeds(cfg: EvolveConfig) -> tuple[list[dict], str]:
    rng = random.Random(cfg.seed)
    if cfg.strategy == "correction_centric":
        config = cfg.corrections_config or main_config(cfg.corrections)
        pool = [r for r in load_rows(cfg.corrections, config, missing_ok=True) if r.get("accepted", True)]
        # One entry per accepted correction: a question corrected more often is drawn more often.
        name = config
    else:  # `shard` slices the seed draws, not the problems they are drawn from
        pool = [p.to_dict() for p in load_problems(dataclasses.replace(cfg, shard=None))]
        name = cfg.problems.replace("/", "_")
    if not pool:
        raise InvalidInputError(f"evolve: no seed questions ({cfg.strategy}).")
    choice = sorted({r.get("source") or "?" for r in pool if task_of(r) == CHOICE_TASK})
    if choice:  # the evolution prompt and the majority vote are for math answers (as in the paper)
        raise InvalidInputError(
            f"evolve: seeds from {', '.join(choice)} are multiple-choice questions; evolution grows "
            "math problems (GSM8K, MATH) only."
        )
    return [pool[rng.randrange(len(pool))] for _ in range(cfg.num_seeds)], name


def _engine(cfg: EvolveConfig, model: str, cache: Path):
    engine_cfg = cfg.engine_config(cfg.backend, model, cfg.prompt_style, progress=cfg.progress)
    return distributed.make_engine(engine_cfg, cache_path=cache)  # shared by the ranks when launched


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def gsm8k_style_solution(completion: str, answer: str) -> str:
    """A sampled CoT answer as a GSM8K-layout gold solution (steps on lines, `#### answer`)."""

    steps = formats.steps_with_answer(formats.split_steps(completion), answer)[:-1]
    return "\n".join(steps + [f"#### {answer}"])


@distributed.stage
def evolve(cfg: EvolveConfig) -> dict[str, Any]:
    """Write evolved `Problem` rows (config `<task>`); returns the summary (with `output_dir`)."""

    t0 = time.time()
    seeds, seed_config = _seeds(cfg)
    name = cfg.dataset_config_name or seed_config
    out = Path(cfg.output_dir or f"outputs/{name}/evolved")
    if cfg.merge_shards:
        return merge_shards(cfg, name, out, seeds)
    draws = distributed.shard_slice(list(enumerate(seeds)), cfg.shard)  # (draw index, seed)
    out = distributed.shard_output(out, cfg.shard)
    out.mkdir(parents=True, exist_ok=True)
    template = evolution_prompt(cfg.evolution_prompt_file)
    answer_model = cfg.answer_model or cfg.model
    tokens = Counter()

    # 1) one new question per seed draw (the draw index keeps repeated seeds distinct in the cache)
    def sp(i: int) -> SamplingParams:  # a per-draw seed: a seed drawn twice can grow two questions
        return SamplingParams(
            temperature=cfg.evolve_temperature,
            max_tokens=cfg.evolve_max_tokens,
            seed=cfg.seed * 1_000_003 + i,
            stop=["\nSeed Problem:"],
        )

    reqs = [
        GenerationRequest(
            f"evolve-{i}-{_sha(s['question'])}", template.replace(_PLACEHOLDER, s["question"]), sp(i)
        )
        for i, s in draws
    ]
    engine = _engine(cfg, cfg.model, out / ".cache" / f"evolve-{_sha(cfg.model)}.jsonl")
    outcome = RequestOutcome("evolve")
    try:
        results = engine.generate(reqs, desc="evolving")
        outcome.add(results, engine.last_summary)
    finally:
        if answer_model != cfg.model:
            engine.close()
    # What became of each draw: its fate ("kept" or a drop reason) and, once it is a new question,
    # its de-duplication key (what `merge_shards` needs to de-duplicate across shards).
    fates = [{"draw": i, "seed": _sha(s["question"]), "key": None, "fate": None} for i, s in draws]
    candidates: list[tuple[dict, str]] = []
    candidate_fates: list[dict] = []
    seen: set[str] = set()
    for (_, s), res, fate in zip(draws, results, fates):
        tokens["prompt_tokens"] += res.prompt_tokens or 0
        tokens["completion_tokens"] += res.completion_tokens or 0
        if not res.ok:
            fate["fate"] = "generation_failed"
            continue
        q = parse_new_question(res.text)
        if q is None:
            fate["fate"] = "empty_question"
        elif similarity(q, s["question"]) >= cfg.similarity_threshold:
            fate["fate"] = "same_as_seed"
        else:
            fate["key"] = hashlib.sha256(" ".join(sorted(_words(q))).encode()).hexdigest()
            if fate["key"] in seen:
                fate["fate"] = "duplicate"
            else:
                seen.add(fate["key"])
                candidates.append((s, q))
                candidate_fates.append(fate)

    # 2) answer each new question num_answers times; majority answer -> gold
    asp = SamplingParams(
        temperature=cfg.answer_temperature, max_tokens=cfg.answer_max_tokens, n=cfg.num_answers, seed=cfg.seed
    )
    areqs = [GenerationRequest(f"answer-{_sha(q)}", formats.cot_prompt(q), asp) for _, q in candidates]
    if answer_model != cfg.model:
        engine = _engine(cfg, answer_model, out / ".cache" / f"answer-{_sha(answer_model)}.jsonl")
    try:
        answers = engine.generate(areqs, desc="answering") if areqs else []
        if areqs:
            outcome.add(answers, engine.last_summary)
    finally:
        engine.close()
    # Before anything is written: a run whose requests failed never replaces finished rows.
    guard_publish(outcome, out, "evolve", name, [name])
    by_req: dict[str, list] = {}
    for res in answers:
        by_req.setdefault(res.request_id, []).append(res)
        tokens["prompt_tokens"] += res.prompt_tokens or 0
        tokens["completion_tokens"] += res.completion_tokens or 0
    rows = []
    for (s, q), req, fate in zip(candidates, areqs, candidate_fates):
        task = task_of(s)
        outs = sorted(by_req.get(req.request_id, []), key=lambda r: r.sample_index)
        texts = [r.text if r.ok else None for r in outs]
        preds = [extract_answer(t, task) if t else None for t in texts]
        if not any(preds):
            fate["fate"] = "no_answers"
            continue
        gold, votes = majority(preds, task)
        if gold is None:
            fate["fate"] = "no_majority"
            continue
        fate["fate"] = "kept"
        winner = texts[preds.index(gold)] or ""
        rows.append(
            {
                "problem_id": f"evolved/{_sha(q)}",
                "source": "evolved",
                "split": "train",
                "question": q,
                "gold_solution": gsm8k_style_solution(winner, gold) if task == "gsm8k" else winner,
                "gold_answer": gold,
                "level": s.get("level"),
                "subject": s.get("subject"),
                "parent_problem_id": s.get("problem_id"),
                "parent_question": s.get("question"),
                "evolution_strategy": cfg.strategy,
                "evolver": cfg.model,
                "answerer": answer_model,
                "answers": [p if p is not None else "" for p in preds],
                "votes": votes,
            }
        )
    summary: dict[str, Any] = {
        "strategy": cfg.strategy,
        **_tally(fates),
        "tokens": dict(tokens),
        "output_dir": str(out),
        "config": name,
        "requests": {name: outcome.record()},
        "wall_s": round(time.time() - t0, 2),
        **({"shard": cfg.shard} if cfg.shard else {}),
        **distributed.record(),
    }
    if cfg.shard:  # a shard may keep nothing; the merge decides
        with (out / DRAWS_FILE).open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(fate) + "\n" for fate in fates)
    return _write(out, name, rows, cfg, summary)


def _tally(fates: list[dict]) -> dict[str, Any]:
    """The summary's counts from what became of each draw: seeds, new questions, kept, drops."""
    drops = Counter(f["fate"] for f in fates if f["fate"] != "kept")
    kept = len(fates) - sum(drops.values())
    return {
        "seeds": len(fates),
        "unique_seed_questions": len({f["seed"] for f in fates}),
        "new_questions": sum(f["key"] is not None and f["fate"] != "duplicate" for f in fates),
        "kept": kept,
        "dropped": {r: drops[r] for r in DROP_REASONS if drops[r]},
        "keep_rate": round(kept / len(fates), 4) if fates else 0.0,
    }


def _write(
    out: Path, name: str, rows: list[dict], cfg: EvolveConfig, summary: dict[str, Any]
) -> dict[str, Any]:
    """The rows, the record and the card (a shard: no card, never pushed); returns the summary."""
    if not rows and not cfg.shard:
        raise InvalidInputError(
            f"evolve: every new question was dropped ({summary['dropped']}); nothing to write."
        )
    save_dataset_config(out, name, {"train": rows})
    whole = not cfg.shard
    finish(out, "evolved", cfg, summary, recipe="evolve", card=whole, push=whole)
    logger.info("evolved %d/%d questions (dropped: %s)", len(rows), summary["seeds"], summary["dropped"])
    return summary


def merge_shards(cfg: EvolveConfig, name: str, out: Path, seeds: list[dict]) -> dict[str, Any]:
    """Concatenate the finished `<out>-shard-*` folders into `out`: the draws in order, and a new
    question whose de-duplication key an earlier draw already had dropped as `duplicate` (a shard
    only knew its own), so the rows and counts are those one process writes.

    Refused before anything is written: shards run with other data settings than this command
    (`distributed.check_merge_config`: num_seeds, seed, the seed source, num_answers ...). `wall_s`
    is the shards' added up plus the merge's own.
    """
    t0 = time.perf_counter()
    shards = distributed.read_shards(out, "evolve")
    distributed.check_merge_config(shards, "evolve", cfg)
    rows: list[dict] = []
    fates: list[dict] = []
    seen: set[str] = set()
    for shard in shards:
        path = shard.folder / DRAWS_FILE
        if not path.is_file():
            raise MissingInputError(f"evolve: shard {shard.folder} has no {DRAWS_FILE}; rerun that shard.")
        shard_rows = iter(shard.rows(name))
        for line in path.read_text(encoding="utf-8").splitlines():
            fate = json.loads(line)
            row = next(shard_rows) if fate["fate"] == "kept" else None
            if fate["key"] is not None:
                if fate["key"] in seen:
                    fate["fate"], row = "duplicate", None
                seen.add(fate["key"])
            fates.append(fate)
            if row is not None:
                rows.append(row)
    if [f["draw"] for f in fates] != list(range(len(seeds))):
        raise InvalidInputError(
            f"evolve: the shards of {out} hold {len(fates)} draws, not the {len(seeds)} seeds of this "
            "config (num_seeds, seed or the seed source changed); rerun the shards with one config."
        )
    summary: dict[str, Any] = {
        "strategy": cfg.strategy,
        **_tally(fates),
        # What the shards asked: a cross-shard duplicate was answered before the merge dropped it.
        "tokens": distributed.add_counts([s.summary.get("tokens") for s in shards]),
        "output_dir": str(out),
        "config": name,
        "requests": distributed.merged_requests(shards, name) or {},
        **distributed.merged_wall_s(shards, t0),
        "merged_shards": len(shards),
    }
    return _write(out, name, rows, cfg, summary)
