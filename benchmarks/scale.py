"""Paper-scale run, simulated: the real stages against a loopback LLM with realistic latency.

A server in its own process (aiohttp, 127.0.0.1) answers like an LLM would, after a log-normal
latency (median 1.5 s, p99 ~10 s) with a few % 429 + Retry-After:

* CoT prompts: the problem's real GSM8K gold solution in the LeMa CoT target format, or (for
  about half of the samples) a path with one computed result perturbed and a wrong final answer;
* corrector prompts: a LeMa-format correction (`Incorrect Step: Step k.` / `Explanation:` /
  `Correct Solution: {...}`) that continues with the gold steps from the first wrong step
  (one in ten keeps the wrong steps, so it is rejected).

Then every stage runs as its own subprocess (`lema-hub collect` -> `correct` -> `build` -> the
three cards re-rendered -> `evaluate` on the test problems), each timed with its own rusage
(CPU seconds, peak RSS) and the server's count of requests and of the latency it served.

    python benchmarks/scale.py                                   # 7,473 x 4, c=512, full latency
    python benchmarks/scale.py --problems 500 --latency_scale 0.1   # a quick run
    python benchmarks/scale.py --latency_scale 0                 # non-LLM work only
    python benchmarks/scale.py --resume_test --latency_scale 0.25   # SIGKILL collect at 50 %, resume
    python benchmarks/scale.py --stages build cards --work_dir DIR   # rerun stages on a kept folder
    python benchmarks/scale.py --latency_scale 0 --problems 15000   # train repeated (new ids): memory
    python benchmarks/scale.py --hedge_quantile -1               # the engine's default: no hedging

The LLM stages run with hedged requests (`--hedge_quantile 0.75 --max_hedges 2`); the server
counts an attempt the client cancels (a hedge lost the race) with the time it served until then,
so "total latency served" and the ideal include it ("ideal_used_s" leaves it out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = Path(os.environ.get("LEMA_DATA_DIR", REPO.parent / "shared" / "data"))
if not (DATA / "gsm8k").is_dir():
    DATA = Path("/work/shared/data")

MEDIAN_S = 1.5
SIGMA = math.log(10 / 1.5) / 2.326  # p99 = median * exp(2.326 sigma) = 10 s
RATE_429 = 0.03
P_WRONG = 0.5  # share of sampled CoT paths that are wrong
P_BAD_FIX = 0.1  # share of corrections that keep the wrong steps


# ------------------------------------------------------------------------------------ the server
class SimulatedLLM:
    """The answers: gold paths, perturbed paths, corrections; all derived from the real GSM8K data."""

    def __init__(self) -> None:
        from lema_hub.formats import normalize_question
        from lema_hub.problems import ProblemArgs, load_problems

        self.by_question = {}
        for split in ("train", "test"):
            args = ProblemArgs(
                problems="gsm8k", problems_path=str(DATA / "gsm8k" / f"{split}.jsonl"), problems_split=split
            )
            for p in load_problems(args):
                self.by_question[normalize_question(p.question)] = p
        self._gold_split: dict[str, list[str]] = {}

    def problem(self, question: str):
        from lema_hub.formats import normalize_question

        return self.by_question[normalize_question(question)]

    def gold_completion(self, p) -> str:
        from lema_hub.formats import cot_target, gsm8k_rationale

        return cot_target(*gsm8k_rationale(p.gold_solution))

    def gold_split(self, p) -> list[str]:
        from lema_hub.formats import split_steps

        if p.problem_id not in self._gold_split:
            self._gold_split[p.problem_id] = split_steps(self.gold_completion(p))
        return self._gold_split[p.problem_id]

    def cot(self, question: str, seed: object) -> str:
        from benchmarks.locator_qa import perturb
        from lema_hub.formats import gold_steps

        p = self.problem(question)
        rng = random.Random(f"{p.problem_id}/{seed}")
        if rng.random() >= P_WRONG:
            return self.gold_completion(p)
        variant = rng.randrange(2)  # two distinct mistakes per problem: the de-duplication has work
        made = perturb(p, random.Random(f"{p.problem_id}#{variant}"))
        steps = made[0] if made else gold_steps(p)
        try:
            wrong = float(p.gold_answer) + (7 if variant == 0 else 13)
            answer = f"{wrong:g}"
        except ValueError:
            answer = "0"
        return " ".join([*steps[:-1], f"The answer is {answer}."])

    def correction(self, text: str, bad: bool) -> str:
        from lema_hub.formats import correction_target, parse_rendered_steps

        block = text.rsplit("Question: ", 1)[1]
        question, _, rest = block.partition("\nOriginal Solution:")
        p = self.problem(question)
        steps = [s for _, s in parse_rendered_steps(rest.split("\nIncorrect Step:", 1)[0])]
        gold = self.gold_split(p)
        k = next(
            (
                i
                for i, s in enumerate(steps)
                if i >= len(gold) or " ".join(s.split()) != " ".join(gold[i].split())
            ),
            len(steps) - 1,
        )
        fixed = steps[k:] if bad else (gold[k:] or gold[-1:])
        explanation = f"Step {k + 1} computes a wrong value; the steps before it are correct."
        return correction_target(k + 1, explanation, fixed)


def list_schedule(latencies: list[float], slots: int) -> float:
    """Makespan of `slots` workers taking the attempts in arrival order: the ideal with its tail."""
    import heapq

    free = [0.0] * slots
    end = 0.0
    for lat in latencies:
        end = max(end, heapq.heapreplace(free, free[0] + lat) + lat)
    return end


def serve(port: int, latency_scale: float, seed: int) -> None:
    from aiohttp import web

    llm = SimulatedLLM()
    rng = random.Random(seed)
    stats: dict = {}

    def reset() -> None:
        stats.clear()
        stats.update(attempts=0, ok=0, r429=0, latency_s=0.0, max_in_flight=0, in_flight=0, first_at=None)
        stats.update(cancelled=0, cancelled_s=0.0)  # attempts the client gave up on (hedges) and their time
        stats["ok_keys"] = Counter()
        stats["latencies"] = []  # per attempt, in arrival order

    reset()

    async def complete(request: web.Request) -> web.Response:
        import asyncio

        payload = await request.json()
        text = payload["messages"][-1]["content"] if "messages" in payload else str(payload.get("prompt", ""))
        stats["attempts"] += 1
        stats["first_at"] = stats["first_at"] or time.time()
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            if rng.random() < RATE_429:
                delay = 0.05 * latency_scale
                stats["latency_s"] += delay
                stats["latencies"].append(delay)
                await asyncio.sleep(delay)
                stats["r429"] += 1
                return web.json_response(
                    {"error": {"message": "rate limited", "type": "rate_limit"}},
                    status=429,
                    headers={"Retry-After": f"{1.0 * latency_scale:g}"},
                )
            delay = min(30.0, rng.lognormvariate(math.log(MEDIAN_S), SIGMA)) * latency_scale
            latencies, t0 = stats["latencies"], time.perf_counter()
            latencies.append(delay)  # in arrival order (the list schedule takes them so)
            at = len(latencies) - 1
            try:
                if delay:
                    await asyncio.sleep(delay)
            except asyncio.CancelledError:  # the client went away (a hedge won): count what was served
                served = time.perf_counter() - t0
                latencies[at] = served
                stats["latency_s"] += served
                stats["cancelled"] += 1
                stats["cancelled_s"] += served
                raise
            stats["latency_s"] += delay
            if "Original Solution:" in text:
                answer = llm.correction(text, bad=rng.random() < P_BAD_FIX)
            else:
                question = text.rsplit("Question: ", 1)[1].rsplit("\nAnswer:", 1)[0]
                answer = llm.cot(question, payload.get("seed"))
        finally:
            stats["in_flight"] -= 1
        stats["ok"] += 1
        stats["ok_keys"][request.headers.get("X-Lema-Request-Key", "")] += 1
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(answer.split())}
        if "messages" in payload:
            choice = {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": answer},
            }
        else:
            choice = {"index": 0, "finish_reason": "stop", "text": answer}
        return web.json_response({"id": "sim", "object": "completion", "usage": usage, "choices": [choice]})

    async def get_stats(request: web.Request) -> web.Response:
        keys = stats["ok_keys"]
        out = {k: v for k, v in stats.items() if k not in ("ok_keys", "latencies")}
        out.update(distinct_ok=len(keys), asked_twice=sum(1 for v in keys.values() if v > 1))
        if request.query.get("concurrency"):
            out["list_schedule_s"] = list_schedule(stats["latencies"], int(request.query["concurrency"]))
        return web.json_response(out)

    async def post_reset(request: web.Request) -> web.Response:
        if request.query.get("keep_counts"):  # only restart the clock of the first request
            stats["first_at"] = None
        else:
            reset()
        return web.json_response({})

    app = web.Application(client_max_size=16 * 2**20)
    app.add_routes(
        [
            web.post("/v1/chat/completions", complete),
            web.post("/v1/completions", complete),
            web.get("/stats", get_stats),
            web.post("/reset", post_reset),
        ]
    )
    print(f"serving on http://127.0.0.1:{port}/v1", flush=True)
    # handler_cancellation: a request the client abandons stops being served (and is counted).
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, backlog=4096, access_log=None, handler_cancellation=True
    )


# ------------------------------------------------------------------------------------ the driver
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency_scale: float, seed: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port), "--latency_scale", str(latency_scale),
         "--seed", str(seed)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    root = f"http://127.0.0.1:{port}"
    for _ in range(100):  # the app binds right after printing
        try:
            urllib.request.urlopen(f"{root}/stats", timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    return proc, root


def server_stats(root: str, reset: bool = False, keep_counts: bool = False, concurrency: int = 0) -> dict:
    if reset or keep_counts:
        url = f"{root}/reset" + ("?keep_counts=1" if keep_counts else "")
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).read()
        return {}
    query = f"?concurrency={concurrency}" if concurrency else ""
    return json.loads(urllib.request.urlopen(f"{root}/stats{query}", timeout=30).read())


def run_stage(name: str, argv: list[str], root: str, log: Path, concurrency: int, reset: bool = True) -> dict:
    """Run one stage in its own process; its wall time, rusage and the server's counts."""
    if reset:
        server_stats(root, reset=True)
    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(
            f"stage {name} failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}"
        )
    s = server_stats(root, concurrency=concurrency)
    cpu = ru.ru_utime + ru.ru_stime
    ideal = s["latency_s"] / concurrency if s["attempts"] else 0.0
    used = (s["latency_s"] - s["cancelled_s"]) / concurrency if s["attempts"] else 0.0
    return {
        "stage": name,
        "wall_s": round(wall, 1),
        "requests": s["ok"],
        "attempts": s["attempts"],
        "r429": s["r429"],
        "ideal_s": round(ideal, 1),
        "of_ideal": round(ideal / wall, 3) if ideal else None,
        "ideal_with_tail_s": round(s.get("list_schedule_s", 0.0), 1),
        "ideal_used_s": round(used, 1),
        "cancelled": s["cancelled"],
        "cancelled_s": round(s["cancelled_s"], 1),
        "max_in_flight": s["max_in_flight"],
        "cpu_s": round(cpu, 1),
        "cpu_ms_per_request": round(1000 * cpu / s["attempts"], 2) if s["attempts"] else None,
        "peak_rss_mib": round(ru.ru_maxrss / 1024),
        "asked_twice": s["asked_twice"],
        "first_request_after_s": round(s["first_at"] - t0, 2) if s["first_at"] and reset else None,
    }


def engine_summaries(name: str, work: Path) -> list[dict] | None:
    """The stage's own records of its `engine.generate` calls (`last_summary`), where it keeps them."""
    try:
        if name.startswith("collect"):
            s = json.loads((work / "mistakes" / "run_summary.json").read_text())["collect"]
            return list(s["generators"].values())
        if name == "correct":
            s = json.loads((work / "corrections" / "run_summary.json").read_text())["correct"]
            return [s["tokens"]["engine"]]
    except (OSError, KeyError, ValueError):
        return None
    return [] if name in ("build", "cards") else None


def engine_wall(name: str, work: Path) -> float | None:
    """Seconds the stage spent in `engine.generate` (its own record), where the stage records it."""
    summaries = engine_summaries(name, work)
    return None if summaries is None else sum(g["wall_s"] for g in summaries)


def engine_hedges(name: str, work: Path) -> tuple[int, int] | None:
    """(hedges sent, hedges that answered first) as the stage's run summary reports them."""
    summaries = engine_summaries(name, work)
    if not summaries:
        return None
    return sum(g.get("hedges", 0) for g in summaries), sum(g.get("hedge_wins", 0) for g in summaries)


def cli(stage: str, *args: object) -> list[str]:
    return [sys.executable, "-m", "lema_hub.cli", stage, *map(str, args)]


def train_file(work: Path, n: int) -> Path:
    """GSM8K train, or (for more than its 7,473 problems) its problems repeated to `n` lines: the
    copies get new ids (`gsm8k/train/<line>`) and the same gold, so memory can be measured beyond
    the paper's size."""
    train = DATA / "gsm8k" / "train.jsonl"
    lines = train.read_text().splitlines()
    if n <= len(lines):
        return train
    path = work / f"gsm8k-train-x{n}.jsonl"
    if not path.is_file():
        path.write_text("\n".join(lines[i % len(lines)] for i in range(n)) + "\n")
    return path


def stage_commands(
    work: Path, url: str, n: int, c: int, latency_scale: float, hedge: tuple = ()
) -> list[tuple[str, list[str]]]:
    retry = max(0.01, latency_scale)
    endpoint = (*hedge, "--backend", "openai", "--base_urls", url, "--prompt_style", "chat", "--concurrency", c,
                "--progress", "false")  # fmt: skip
    train, test = train_file(work, n), DATA / "gsm8k" / "test.jsonl"
    cards = (
        "from lema_hub.cards.dataset import write_dataset_card as w; "
        f"w({str(work / 'mistakes')!r}, 'mistakes'); w({str(work / 'corrections')!r}, 'corrections'); "
        f"w({str(work / 'mixture')!r}, 'mixture')"
    )
    return [
        ("collect", cli("collect", "--problems", "gsm8k", "--problems_path", train, "--problems_limit", n,
                        "--model", "sim-generator", "--num_samples", 4, "--temperature", 0.8,
                        "--retry_base_delay", retry, "--output_dir", work / "mistakes", *endpoint)),
        ("correct", cli("correct", "--mistakes", work / "mistakes", "--model", "sim-corrector",
                        "--output_dir", work / "corrections", *endpoint)),
        ("build", cli("build", "--corrections", work / "corrections", "--output_dir", work / "mixture",
                      "--problems", "gsm8k", "--problems_path", train, "--problems_limit", n,
                      "--decontaminate", test)),
        ("cards", [sys.executable, "-c", cards]),
        ("evaluate", cli("evaluate", "--models", "sim-generator", "--problems", "gsm8k", "--problems_path", test,
                         "--problems_split", "test", "--output_dir", work / "eval", *endpoint[:-2])),
    ]  # fmt: skip


def table(rows: list[dict]) -> str:
    head = ("| stage | wall s | requests (attempts, 429) | hedges (won) | ideal s | % of ideal rate "
            "| in the engine: s, % of ideal, % of ideal of answers used | ideal with its tail s | client CPU s "
            "| CPU ms / request | peak RSS MiB | outside the engine s |")  # fmt: skip
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        pct = f"{r['of_ideal']:.0%}" if r["of_ideal"] else "-"
        reqs = f"{r['requests']:,} ({r['attempts']:,}, {r['r429']})" if r["attempts"] else "-"
        per = r["cpu_ms_per_request"] if r["cpu_ms_per_request"] is not None else "-"
        ideal = r["ideal_s"] if r["attempts"] else "-"
        outside = r.get("outside_engine_s")
        tail = r["ideal_with_tail_s"] if r["attempts"] else "-"
        hedges = f"{r['hedges']:,} ({r['hedge_wins']:,})" if r.get("hedges") is not None else "-"
        gen = r.get("engine_s")
        inside = "-"
        if gen and r["attempts"]:
            inside = f"{gen:.1f}, {r['ideal_s'] / gen:.0%}, {r['ideal_used_s'] / gen:.0%}"
        cells = [r["stage"], r["wall_s"], reqs, hedges, ideal, pct, inside, tail, r["cpu_s"], per]
        cells += [r["peak_rss_mib"], "-" if outside is None else outside]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def pipeline(args: argparse.Namespace, root: str, work: Path) -> list[dict]:
    rows = []
    commands = stage_commands(
        work, f"{root}/v1", args.problems, args.concurrency, args.latency_scale, hedge_args(args)
    )
    for name, argv in commands:
        if args.stages and name not in args.stages:
            continue
        r = run_stage(name, argv, root, work / f"{name}.log", args.concurrency)
        gen = engine_wall(name, work)
        r["engine_s"] = gen
        r["hedges"], r["hedge_wins"] = engine_hedges(name, work) or (None, None)
        r["outside_engine_s"] = round(r["wall_s"] - gen, 1) if gen is not None else None
        print(json.dumps(r), flush=True)
        rows.append(r)
    if args.stages and "correct" not in args.stages:
        return rows
    summary = json.loads((work / "corrections" / "run_summary.json").read_text())["correct"]
    print(json.dumps({"corrections": {k: summary.get(k) for k in ("n", "accepted", "reject_reasons")}}))
    if (work / "mixture" / "run_summary.json").is_file():
        mix = next(iter(json.loads((work / "mixture" / "run_summary.json").read_text()).values()))
        print(json.dumps({"mixture": {k: mix.get(k) for k in ("gold_cot_rows", "correction_rows")}}))
    return rows


def resume_test(args: argparse.Namespace, root: str, work: Path) -> dict:
    """SIGKILL collect once half its requests are answered, rerun it, count what the server saw."""
    name, argv = stage_commands(
        work, f"{root}/v1", args.problems, args.concurrency, args.latency_scale, hedge_args(args)
    )[0]
    total = 4 * args.problems
    server_stats(root, reset=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    with (work / "killed.log").open("w") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
        while server_stats(root)["ok"] < total // 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.perf_counter() - start
    while server_stats(root)["in_flight"]:  # the requests in flight at the kill finish server-side
        time.sleep(0.1)
    before = server_stats(root)
    cache = next((work / "mistakes" / ".cache" / "requests").glob("*.jsonl"))
    cached = sum(1 for _ in cache.open())
    server_stats(root, keep_counts=True)
    t0 = time.time()
    rerun = run_stage("collect (resumed)", argv, root, work / "resumed.log", args.concurrency, reset=False)
    after = server_stats(root)
    out = {
        "killed_after_s": round(killed_at, 1),
        "answered_before_kill": before["ok"],
        "cached_lines_at_kill": cached,
        "lost_in_flight": before["ok"] - cached,
        "resume_requests": after["ok"] - before["ok"],
        "expected_resume_requests": total - cached,
        "resume_first_request_after_s": round(after["first_at"] - t0, 2) if after["first_at"] else None,
        "resume_wall_s": rerun["wall_s"],
        "keys_answered_twice": after["asked_twice"],
        "samples_in_dataset": json.loads((work / "mistakes" / "run_summary.json").read_text())["collect"][
            "samples"
        ],
    }
    print(json.dumps(out), flush=True)
    return out


def hedge_args(args: argparse.Namespace) -> tuple:
    """The stages' hedging flags (the engine's default is off)."""
    if args.hedge_quantile is None:
        return ()
    return ("--hedge_quantile", args.hedge_quantile, "--max_hedges", args.max_hedges)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--problems",
        type=int,
        default=7473,
        help="first N GSM8K train problems (more: repeated with new ids)",
    )
    ap.add_argument("--concurrency", type=int, default=512)
    ap.add_argument("--latency_scale", type=float, default=1.0, help="0 = answer at once (non-LLM work)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume_test", action="store_true")
    ap.add_argument(
        "--hedge_quantile",
        type=float,
        default=0.75,
        help="the stages' hedge_quantile (a negative value: no hedging)",
    )
    ap.add_argument("--max_hedges", type=int, default=2)  # fmt: skip
    ap.add_argument("--stages", nargs="+", default=None, help="only these (each needs the ones before it)")
    ap.add_argument("--work_dir", default=None, help="keep the stage folders here (default: a temp dir)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hedge_quantile is not None and args.hedge_quantile < 0:
        args.hedge_quantile = None
    if args.serve:
        serve(args.port, args.latency_scale, args.seed)
        return
    print(
        f"# scale: {args.problems} problems x 4, concurrency {args.concurrency}, latency x{args.latency_scale} "
        f"hedging {'off' if args.hedge_quantile is None else f'past p{args.hedge_quantile * 100:g}, ' + str(args.max_hedges) + ' per request'} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    proc, root = start_server(args.latency_scale, args.seed)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.work_dir or tmp)
            work.mkdir(parents=True, exist_ok=True)
            if args.resume_test:
                resume_test(args, root, work)
            else:
                print(table(pipeline(args, root, work)))
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
