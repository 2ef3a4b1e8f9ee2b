"""Benchmark `lema-hub bench-corrector`.

1. Offline: the arithmetic-claim baseline (`backend: reference`) on all ProcessBench items
   (`$LEMA_DATA_DIR/processbench`, 3,400 solutions): the scoring alone, and the whole stage
   (load, score both protocols, write parquet + summary + card with its plot).
2. Remote: the stage against a loopback OpenAI-compatible server in its own process that answers
   every request after a fixed latency (tests/fake_openai_server.py). With `concurrency` workers the
   ideal rate is concurrency / latency; the achieved requests/s over that is how busy the stage
   keeps the configured concurrency (the engine is the same one `correct` uses).

    LEMA_DATA_DIR=../shared/data python benchmarks/bench_corrector.py
    python benchmarks/bench_corrector.py --skip_offline --items 400 --latency 0.1 --concurrency 8 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.engine import start_server  # noqa: E402
from lema_hub.bench_corrector import BenchCorrectorConfig, bench_corrector  # noqa: E402
from lema_hub.corrector.claims import first_false_step  # noqa: E402


def _data_dir() -> Path | None:
    for c in (os.environ.get("LEMA_DATA_DIR"), REPO.parent / "shared" / "data"):
        if c and (Path(c) / "processbench").is_dir():
            return Path(c) / "processbench"
    return None


def offline(data: Path, out: Path) -> None:
    items = [it for f in sorted(data.glob("*.json")) for it in json.loads(f.read_text())]
    t0 = time.perf_counter()
    flagged = sum(first_false_step(it["steps"]) is not None for it in items)
    score_s = time.perf_counter() - t0
    print(f"offline scoring: {len(items)} items, {flagged} flagged, {score_s:.2f} s")
    t0 = time.perf_counter()
    s = bench_corrector(BenchCorrectorConfig(data=str(data), output_dir=str(out / "offline"), progress=False))
    stage_s = time.perf_counter() - t0
    print(f"offline stage (both protocols, {s['rows']} rows, parquet + card): {stage_s:.2f} s")
    pb = s["processbench"]
    for split in [k for k in pb if k != "average_f1"]:
        m, lm = pb[split], s["lema"][split]
        print(
            f"  {split:14s} lema exact {100 * lm['exact']:5.1f}  within-one {100 * lm['within_one']:5.1f}  "
            f"| error acc {100 * m['error_acc']:5.1f}  correct acc {100 * m['correct_acc']:5.1f}  "
            f"F1 {100 * m['f1']:5.1f}"
        )
    print(f"  average F1 {100 * pb['average_f1']:.1f}")


def remote(out: Path, n_items: int, latency: float, concurrencies: list[int]) -> None:
    folder = out / "items"
    folder.mkdir(parents=True, exist_ok=True)
    items = [
        {
            "id": f"x-{i}",
            "problem": f"Problem {i}: what is {i} + 1?",
            "steps": [f"{i} + 1 = {i + 1}.", f"The answer is {i + 1}."],
            "label": -1,
        }
        for i in range(n_items)
    ]
    (folder / "gsm8k.json").write_text(json.dumps(items))
    proc, url = start_server(latency)
    try:
        for c in concurrencies:
            cfg = BenchCorrectorConfig(
                data=str(folder), output_dir=str(out / f"remote-{c}"), backend="openai", model="fake-model",
                base_urls=[url], prompt_style="chat", concurrency=c, progress=False,
                protocols=["processbench"], max_retries=0,
            )  # fmt: skip
            t0 = time.perf_counter()
            s = bench_corrector(cfg)
            wall = time.perf_counter() - t0
            eng = s["tokens"]["engine"]
            rate = eng["generated"] / eng["wall_s"]
            ideal = c / latency
            bare = _bare_engine(cfg, items, f"bare-{c}")
            print(
                f"remote: {n_items} requests, latency {latency * 1000:.0f} ms, concurrency {c}: "
                f"stage's engine call {eng['wall_s']:.2f} s = {rate:.1f} req/s, {100 * rate / ideal:.0f} % of "
                f"ideal {ideal:.0f}; the same requests through a bare engine {bare:.1f} req/s "
                f"(stage / bare {rate / bare:.2f}); whole stage {wall:.2f} s"
            )
    finally:
        proc.kill()
        proc.wait()


def _bare_engine(cfg: BenchCorrectorConfig, items: list[dict], tag: str) -> float:
    """req/s of the same prompts sent straight through the engine (no stage around it, no cache)."""
    from lema_hub.bench_corrector import no_error_prompt
    from lema_hub.corrector.prompt import build_corrector_input, corrector_prompt
    from lema_hub.generation import GenerationRequest, SamplingParams, make_engine

    p = no_error_prompt(corrector_prompt("gsm8k"))
    sp = SamplingParams(max_tokens=cfg.max_tokens, stop=["\nQuestion:", "\r\nQuestion:"], seed=cfg.seed)
    reqs = [
        GenerationRequest(f"{tag}-{i}", build_corrector_input(p, it["problem"], it["steps"], "chat"), sp)
        for i, it in enumerate(items)
    ]
    engine = make_engine(cfg.engine_config(cfg.backend, f"{cfg.model}-{tag}", "chat", progress=False))
    try:
        engine.generate(reqs)
        return engine.last_summary["requests_per_s"]
    finally:
        engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip_offline", action="store_true")
    ap.add_argument("--skip_remote", action="store_true")
    ap.add_argument("--items", type=int, default=800, help="remote: requests per run")
    ap.add_argument(
        "--latency", type=float, nargs="+", default=[0.1, 0.5], help="remote: server latencies (s)"
    )
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if not args.skip_offline:
            data = _data_dir()
            if data is None:
                print("offline: skipped (no processbench under $LEMA_DATA_DIR or ../shared/data)")
            else:
                offline(data, out)
        if not args.skip_remote:
            for latency in args.latency:
                remote(out / f"lat-{latency}", args.items, latency, args.concurrency)


if __name__ == "__main__":
    main()
