"""SFT throughput on CPU: TRL's padded default vs padding-free vs packing, activation checkpointing on/off.

    python benchmarks/sft.py [--steps 4] [--rows 256] [--batch 8] [--only NAME ...]

Embedded SmolLM2-135M-Instruct with LoRA (the smollm2 CPU recipe's adapter), the same rows in the
same order for every setting; each setting runs in its own process so peak memory (max RSS) is its
own. Tokens/s counts real (non-pad) tokens; the first step is a warm-up and is not timed. Correctness:
the step-1 loss of every non-packed setting must equal the padded default's (same rows, same
weights), which fails loudly if padding-free attention leaked across sequences. Rows: GSM8K train
from $LEMA_DATA_DIR / ../shared/data when present (read at run time), else synthetic rows of
GSM8K-like lengths.
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


def run_one(name: str, steps: int, n_rows: int, batch: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lema_hub.models import resolve_model
    from lema_hub.training import to_prompt_completion

    torch.manual_seed(0)
    path = resolve_model("embedded:smollm2-135m-instruct")
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
        max_steps=steps + 1,
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
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    # tokens[] holds one entry per collated batch; the dataloader may prefetch one extra.
    timed_tokens = sum(tokens[1 : steps + 1])
    timed = sum(times[1:])
    return {
        "setting": name,
        "steps": steps,
        "batch": batch,
        "tokens_per_step": timed_tokens / steps,
        "s_per_step": timed / steps,
        "tokens_per_s": timed_tokens / timed,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loss_step1": losses[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", nargs="*", default=None, help="settings to run (default: all)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if ns.worker:
        print("RESULT " + json.dumps(run_one(ns.worker, ns.steps, ns.rows, ns.batch)))
        return

    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    results = []
    for name in ns.only or list(SETTINGS):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--steps",
            str(ns.steps),
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
    print("\n| setting | tokens/step | s/step | tokens/s | speed-up | peak RSS (GiB) | step-1 loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['setting']} | {r['tokens_per_step']:.0f} | {r['s_per_step']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {r['peak_rss_gib']:.2f} | {r['loss_step1']:.4f} |"
        )
    for r in results:
        if "packing" not in r["setting"] and abs(r["loss_step1"] - base["loss_step1"]) > 1e-3 * abs(
            base["loss_step1"]
        ):
            raise SystemExit(f"{r['setting']}: step-1 loss {r['loss_step1']} != padded {base['loss_step1']}")
    print(
        "\nstep-1 losses of all non-packed settings agree (same rows, same weights): padding-free is exact."
    )


if __name__ == "__main__":
    main()
