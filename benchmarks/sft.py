"""SFT throughput on CPU: TRL's padded default vs length-grouped, padding-free and packed batches,
activation checkpointing on/off.

    python benchmarks/sft.py [--rows 64] [--batch 4] [--only NAME ...]
    python benchmarks/sft.py --rows 16 --profile padded     # operators by CPU time

Embedded SmolLM2-135M-Instruct with LoRA (the smollm2 CPU recipe's adapter). Every setting trains
one epoch over the same rows (so every setting sees the same tokens; the length-grouped sampler and
packing change which rows share a batch, the others keep the order), each in its own process so
peak memory (max RSS) is its own. Tokens/s counts real (non-pad) tokens; the first step is a warm-up
and is not timed. Correctness: the step-1 loss of every setting that keeps the order must equal the
padded default's (same rows, same weights), which fails loudly if padding-free attention leaked
across sequences; the epoch's mean loss is shown for all. Rows: GSM8K train from $LEMA_DATA_DIR /
../shared/data when present (read at run time), else synthetic rows of GSM8K-like lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS: dict[str, dict] = {
    "padded+ckpt (TRL default)": {"activation_checkpointing": True},
    "padded": {"activation_checkpointing": False},
    "padded, length-grouped": {
        "activation_checkpointing": False,
        "train_sampling_strategy": "group_by_length",
    },
    "padding_free": {"activation_checkpointing": False, "padding_free": True, "max_length": None},
    "packing(bfd)": {"activation_checkpointing": False, "packing": True, "max_length": 512},
}
PROMPT = "Please solve the following math problem.\nQuestion: {q}\nAnswer: Let's think step by step.\n"


def _rows(n: int) -> list[dict]:
    data_dir = os.environ.get("LEMA_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    path = Path(data_dir) / "gsm8k" / "train.jsonl"
    rows = []
    if path.is_file():
        with path.open() as fh:
            for line in fh:
                ex = json.loads(line)
                body, answer = ex["answer"].split("####")
                rationale = " ".join(re.sub(r"<<[^>]*>>", "", body).split())
                rows.append(
                    {
                        "prompt": PROMPT.format(q=ex["question"]),
                        "completion": f"{rationale} The answer is {answer.strip()}.",
                    }
                )
                if len(rows) == n:
                    break
        return rows
    import random

    rng = random.Random(0)
    for i in range(n):
        q = " ".join(f"word{rng.randint(0, 999)}" for _ in range(rng.randint(25, 70)))
        r = " ".join(f"step{rng.randint(0, 999)}" for _ in range(rng.randint(20, 110)))
        rows.append({"prompt": PROMPT.format(q=q), "completion": f"{r} The answer is {i}."})
    return rows


REORDERS = ("length-grouped", "packing")  # settings whose batches hold other rows than the default's


def run_one(name: str, n_rows: int, batch: int, profile: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lema_hub.models import resolve_model
    from lema_hub.schema import EMBEDDED_MODEL
    from lema_hub.sft import to_prompt_completion

    torch.manual_seed(0)
    path = resolve_model(EMBEDDED_MODEL)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    dataset = to_prompt_completion(Dataset.from_list(_rows(n_rows)), "chat")
    from peft import LoraConfig

    peft_config = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    out = tempfile.mkdtemp(prefix="lema-sft-bench-")
    args = SFTConfig(
        output_dir=out,
        per_device_train_batch_size=batch,
        num_train_epochs=1,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
        **{"max_length": 512, **SETTINGS[name]},
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft_config
    )

    tokens: list[int] = []
    collate = trainer.data_collator

    def counting_collator(examples):
        out_batch = collate(examples)
        mask = out_batch.get("attention_mask")
        tokens.append(
            int(mask.sum()) if mask is not None else int(sum(len(e["input_ids"]) for e in examples))
        )
        return out_batch

    trainer.data_collator = counting_collator
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer.add_callback(Timer())
    if profile:  # where a step's time goes, by operator (the whole epoch)
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train()
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25), file=sys.stderr)
    else:
        trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    steps = len(times) - 1
    timed_tokens = sum(tokens[1 : steps + 1])
    timed = sum(times[1:])
    return {
        "setting": name,
        "steps": steps,
        "epoch_loss": sum(losses) / len(losses),
        "batch": batch,
        "tokens_per_step": timed_tokens / steps,
        "s_per_step": timed / steps,
        "tokens_per_s": timed_tokens / timed,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loss_step1": losses[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=64, help="rows of the one epoch every setting trains")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--only", nargs="*", default=None, help="settings to run (default: all)")
    ap.add_argument(
        "--profile",
        default=None,
        metavar="NAME",
        help="run one setting under torch.profiler and print its table",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if ns.profile:
        run_one(ns.profile, ns.rows, ns.batch, profile=True)
        return
    if ns.worker:
        print("RESULT " + json.dumps(run_one(ns.worker, ns.rows, ns.batch)))
        return

    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    results = []
    for name in ns.only or list(SETTINGS):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--rows",
            str(ns.rows),
            "--batch",
            str(ns.batch),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[len("RESULT ") :]))
        r = results[-1]
        print(f"  done {name}: {r['tokens_per_s']:.0f} tok/s", flush=True)

    base = next((r for r in results if r["setting"].startswith("padded+ckpt")), results[0])
    print(f"\nuptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(
        "\n| setting | timed steps | tokens/step | s/step | tokens/s | speed-up | peak RSS (GiB) "
        "| step-1 loss | epoch mean loss |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['setting']} | {r['steps']} | {r['tokens_per_step']:.0f} | {r['s_per_step']:.2f} | "
            f"{r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
            f"{r['peak_rss_gib']:.2f} | {r['loss_step1']:.4f} | {r['epoch_loss']:.4f} |"
        )
    for r in results:
        if reorders(r["setting"]):
            continue
        if abs(r["loss_step1"] - base["loss_step1"]) > 1e-3 * abs(base["loss_step1"]):
            raise SystemExit(f"{r['setting']}: step-1 loss {r['loss_step1']} != padded {base['loss_step1']}")
    print(
        "\nstep-1 losses of the settings that keep the row order agree (same rows, same weights): "
        "padding-free is exact."
    )


def reorders(setting: str) -> bool:
    return any(tag in setting for tag in REORDERS)


if __name__ == "__main__":
    main()
