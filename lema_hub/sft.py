"""Supervised fine-tuning on a LeMa mixture with TRL's `SFTTrainer` (LoRA, QLoRA or full).

`train()` reads top to bottom like alignment-handbook's `sft.py`: load the mixture view, the
tokenizer and the model, build the trainer, train (resuming from the last checkpoint), then, on
the main process only, save, write the model card, optionally merge the adapter and push.

The training rows are prompt/completion pairs, so TRL computes the loss on the completion only
(the EOS that ends the completion included); nothing here builds labels by hand.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lema_hub.artifacts import load_artifact
from lema_hub.cards.model import write_model_card
from lema_hub.configs import config_to_dict
from lema_hub.errors import InvalidInputError
from lema_hub.models import (
    base_model_hub_id,
    has_chat_template,
    is_hub_id,
    load_model,
    load_tokenizer,
    resolve_model,
    resolve_prompt_style,
    write_model_meta,
)
from lema_hub.publish import MODEL, finish
from lema_hub.push import push_folder
from lema_hub.schema import EMBEDDED_MODEL, EMBEDDED_PREFIX, PROMPT_STYLE_CHOICES

logger = logging.getLogger(__name__)


@dataclass
class SFTScriptArguments:
    """What `recipes/sft.py` needs beyond `trl.SFTConfig` and `trl.ModelConfig`."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "The mixture: a Hub dataset id or a local Hub-layout folder (written by `lema-hub build`)."
        },
    )
    task: str = field(default="gsm8k", metadata={"help": "Problem collection: gsm8k, math, sample, ..."})
    view: str = field(
        default="lema",
        metadata={"help": "Mixture view: lema (CoT + corrections), cot (CoT only) or an ablation view."},
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Config name inside the mixture; default `<task>-<view>`."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub dataset."}
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Keep at most this many rows (a seeded random subset; data-size ablations)."},
    )
    max_correction_samples: int | None = field(
        default=None,
        metadata={
            "help": "Keep at most this many rows of kind 'correction' (correction-data-size ablations)."
        },
    )
    prompt_style: str = field(
        default="auto",
        metadata={
            "help": "chat: rows as messages through the chat template (instruct models); plain: raw text in the "
            "paper's format (base models); auto: chat when the tokenizer has a chat template.",
            "choices": list(PROMPT_STYLE_CHOICES),
        },
    )
    merge_adapter: bool = field(
        default=False,
        metadata={
            "help": "After LoRA training, also write `<output_dir>-merged`: base + adapter merged (eval, Space)."
        },
    )
    license: str | None = field(
        default=None, metadata={"help": "License for the model card (default: the base's)."}
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Cut each prompt to this many tokens (its start kept, BOS included) before TRL tokenizes, "
            "like the paper's QLoRA `source_max_len` (GSM8K 512, MATH 768). None: no separate cut."
        },
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={
            "help": "Cut each completion to this many tokens (its start kept, EOS included), like the paper's "
            "`target_max_len` (GSM8K 512, MATH 768). None: no separate cut."
        },
    )

    def __post_init__(self) -> None:
        if self.prompt_style not in PROMPT_STYLE_CHOICES:
            raise InvalidInputError(
                f"prompt_style must be one of {PROMPT_STYLE_CHOICES}, got {self.prompt_style!r}."
            )
        for name in ("max_train_samples", "max_correction_samples"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {value}.")
        for name in ("max_prompt_length", "max_completion_length"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise InvalidInputError(f"{name} must be >= 2 tokens, got {value}.")

    @property
    def config_name(self) -> str:
        return self.dataset_config or f"{self.task}-{self.view}"


def build_trainer(script_args: SFTScriptArguments, training_args, model_args) -> tuple[Any, str]:
    """Data, tokenizer, model -> (`SFTTrainer`, prompt style). `train` runs it; tests inspect its collator."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTTrainer, get_peft_config, get_quantization_config

    _check_args(script_args, training_args, model_args)
    _move_hub_token_to_env(training_args)
    set_seed(training_args.seed)

    # Data: one view of the mixture, as prompt/completion rows
    dataset = load_mixture(script_args, seed=_data_seed(training_args))
    logger.info(
        "Loaded %d rows from %s (config %s).", len(dataset), script_args.dataset_name, script_args.config_name
    )

    # Tokenizer, and the row format it calls for (chat for instruct models, plain text for base models)
    model_path = resolve_model(model_args.model_name_or_path)
    trust_remote_code = getattr(training_args, "trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(
        model_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
    )
    prompt_style = resolve_prompt_style(
        script_args.prompt_style, model_args.model_name_or_path, get_tokenizer=lambda: tokenizer
    )
    check_chat_template(prompt_style, tokenizer)
    dataset = to_prompt_completion(dataset, prompt_style)
    dataset = truncate_prompt_completion(
        dataset, tokenizer, script_args.max_prompt_length, script_args.max_completion_length
    )

    # Model (4-bit / 8-bit for QLoRA when asked)
    quantization_config = get_quantization_config(model_args)
    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=_torch_dtype(model_args.dtype),
        quantization_config=quantization_config,
        device_map=kbit_device_map() if quantization_config is not None else None,
        **(training_args.model_init_kwargs or {}),
    )
    training_args.model_init_kwargs = None  # used above; SFTTrainer rejects them with a model instance
    align_special_tokens(model, tokenizer)

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    return trainer, prompt_style


def train(script_args: SFTScriptArguments, training_args, model_args) -> dict[str, Any]:
    """Fine-tune `model_args.model_name_or_path` on one mixture view; returns a small summary."""
    trainer, prompt_style = build_trainer(script_args, training_args, model_args)
    dataset, tokenizer = trainer.train_dataset, trainer.processing_class

    # Train, resuming from the last checkpoint in output_dir when there is one
    checkpoint = resume_checkpoint(training_args)
    if checkpoint is not None:
        logger.info("Resuming from %s.", checkpoint)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(train_result.metrics, train_samples=len(dataset))
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    # Save (every process joins; only the main process writes), then card, merge and push on the main one
    output_dir = Path(training_args.output_dir)
    # `_internal_call` keeps the Trainer from pushing here with its own card; we push below with ours.
    trainer.save_model(str(output_dir), _internal_call=True)
    is_adapter = model_args.use_peft
    summary: dict[str, Any] = {
        "output_dir": str(output_dir),
        "adapter": is_adapter,
        "merged_dir": None,
        "hub_url": None,
        "train_rows": len(dataset),
        "global_step": trainer.state.global_step,
        "resumed_from": checkpoint,
        "prompt_style": prompt_style,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    if trainer.accelerator.is_main_process:
        info = model_card_info(script_args, training_args, model_args, trainer, prompt_style, metrics)
        finalize_model_folder(output_dir, info, script_args, training_args, model_args, tokenizer)
        if is_adapter and script_args.merge_adapter:
            summary["merged_dir"] = str(merge_adapter(output_dir, model_args, info))
        if training_args.push_to_hub:
            trainer._finish_current_push()  # wait for the last every_save upload before the final commit
            summary["hub_url"] = push_model(output_dir, training_args)
    trainer.accelerator.wait_for_everyone()
    if hasattr(trainer, "end"):
        trainer.end()
    return summary


# ---------------------------------------------------------------------------------------------------
# Helpers: what does not belong in the flow above


def _check_args(script_args: SFTScriptArguments, training_args, model_args) -> None:
    import torch

    if not script_args.dataset_name:
        raise InvalidInputError(
            "dataset_name is required: a mixture folder (from `lema-hub build`) or a Hub dataset id."
        )
    if not model_args.model_name_or_path:
        raise InvalidInputError(
            f"model_name_or_path is required (a Hub id, a local folder or {EMBEDDED_MODEL})."
        )
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        raise InvalidInputError("QLoRA (load_in_4bit / load_in_8bit) trains an adapter: set use_peft: true.")
    if training_args.assistant_only_loss:
        raise InvalidInputError(
            "assistant_only_loss is not needed (prompt/completion rows already give completion-only loss) and "
            "fails on chat templates without {% generation %} markers; remove it."
        )
    if training_args.bf16 and not torch.cuda.is_available():
        logger.warning("bf16 on CPU is several times slower than fp32; set `bf16: false` for CPU runs.")


def _move_hub_token_to_env(training_args) -> None:
    """Keep a `hub_token` argument out of every file: in this process's HF_TOKEN instead.

    The Trainer pickles its arguments into training_args.bin, saved with every checkpoint and
    uploaded by every in-training push; huggingface_hub finds the token in the environment.
    """
    if training_args.hub_token:
        os.environ["HF_TOKEN"] = training_args.hub_token
        training_args.hub_token = None


def _data_seed(training_args) -> int:
    return training_args.data_seed if training_args.data_seed is not None else training_args.seed


def _torch_dtype(dtype: str | None):
    import torch

    if dtype in (None, "auto"):
        return dtype
    if not hasattr(torch, dtype):
        raise InvalidInputError(f"Unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16.")
    return getattr(torch, dtype)


def load_mixture(script_args: SFTScriptArguments, seed: int = 42):
    """Load one view of the mixture (folder or Hub id) and apply the size limits."""
    from datasets import load_dataset

    name = script_args.dataset_name
    config = script_args.config_name
    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            dataset = load_artifact(str(folder), config, script_args.dataset_train_split)
        except (ValueError, FileNotFoundError) as exc:
            raise InvalidInputError(
                f"Mixture folder {folder}: {exc} Build it with `lema-hub build` or set task/view/dataset_config."
            ) from exc
    else:
        try:
            dataset = load_dataset(
                name, config, split=script_args.dataset_train_split, revision=script_args.dataset_revision
            )
        except ValueError as exc:
            raise InvalidInputError(
                f"Mixture {name!r} has no config {config!r} with split {script_args.dataset_train_split!r} "
                f"(set task/view/dataset_config): {exc}"
            ) from exc
    missing = {"prompt", "completion"} - set(dataset.column_names)
    if missing:
        raise InvalidInputError(
            f"Mixture {name!r} config {config!r} lacks column(s) {sorted(missing)}; "
            f"training rows need prompt and completion (found {dataset.column_names})."
        )
    if script_args.max_correction_samples is not None:
        if "kind" not in dataset.column_names:
            raise InvalidInputError("max_correction_samples needs a 'kind' column in the mixture.")
        kinds = dataset["kind"]
        corrections = [i for i, k in enumerate(kinds) if k == "correction"]
        others = [i for i, k in enumerate(kinds) if k != "correction"]
        keep = set(_seeded_subset(corrections, script_args.max_correction_samples, seed))
        dataset = dataset.select(sorted(others + list(keep)))
    if script_args.max_train_samples is not None and script_args.max_train_samples < len(dataset):
        dataset = dataset.select(
            sorted(_seeded_subset(range(len(dataset)), script_args.max_train_samples, seed))
        )
    if len(dataset) == 0:
        raise InvalidInputError(f"Mixture {name!r} config {config!r} has no training rows left.")
    return dataset


def _seeded_subset(indices, k: int, seed: int) -> list[int]:
    import random

    indices = list(indices)
    if k >= len(indices):
        return indices
    return random.Random(seed).sample(indices, k)


def check_chat_template(style: str, tokenizer) -> None:
    """Chat rows go through the chat template: a tokenizer without one cannot train on them."""
    if style == "chat" and not has_chat_template(tokenizer):
        raise InvalidInputError(
            "prompt_style 'chat' needs a tokenizer with a chat template; use 'plain' for base models."
        )


def to_prompt_completion(dataset, style: str):
    """Keep only prompt/completion, converted to `style` (message lists for chat, strings for plain)."""
    dataset = dataset.select_columns(["prompt", "completion"])
    first = dataset[0]
    is_chat = isinstance(first["prompt"], list)
    if style == "chat" and not is_chat:
        return dataset.map(
            lambda row: {
                "prompt": [{"role": "user", "content": row["prompt"]}],
                "completion": [{"role": "assistant", "content": row["completion"]}],
            },
            desc="Wrapping rows as messages",
        )
    if style == "plain" and is_chat:
        return dataset.map(
            lambda row: {
                "prompt": "".join(m["content"] for m in row["prompt"]),
                "completion": "".join(m["content"] for m in row["completion"]),
            },
            desc="Flattening messages to plain text",
        )
    return dataset


def _cut_text(text: str, tokenizer, budget: int) -> tuple[str, bool]:
    """`text` cut after its first `budget` tokens (at a character offset, so no decode round trip)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= budget:
        return text, False
    return text[: enc["offset_mapping"][budget - 1][1]], True


def _cut(value, tokenizer, budget: int) -> tuple[Any, bool]:
    """Cut a plain string, or the last message of a message list (the user turn / the assistant turn)."""
    if isinstance(value, str):
        return _cut_text(value, tokenizer, budget)
    messages = [dict(m) for m in value]
    messages[-1]["content"], cut = _cut_text(messages[-1]["content"], tokenizer, budget)
    return messages, cut


def truncate_prompt_completion(
    dataset, tokenizer, max_prompt_length: int | None, max_completion_length: int | None
):
    """Cut prompts and completions separately, keeping each one's start, as the paper's QLoRA script did
    (`source_max_len` / `target_max_len`); TRL's `max_length` only cuts the joined sequence.

    Budgets count the special tokens TRL adds: the tokenizer's BOS on the prompt, the EOS on the
    completion. For chat rows the message contents are cut and the chat template's tokens come on top.
    Logs how many prompts and completions were cut.
    """
    if max_prompt_length is None and max_completion_length is None:
        return dataset
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidInputError(
            "max_prompt_length / max_completion_length need a fast tokenizer (character offsets); "
            f"{type(tokenizer).__name__} is not one."
        )
    bos = len(tokenizer("", add_special_tokens=True)["input_ids"])  # BOS (and any other prefix) per prompt
    stats = {"prompt": 0, "completion": 0}

    def cut_row(row):
        out = {}
        for key, limit, reserved in (
            ("prompt", max_prompt_length, bos),
            ("completion", max_completion_length, 1),  # the EOS TRL appends
        ):
            if limit is None:
                out[key] = row[key]
                continue
            out[key], cut = _cut(row[key], tokenizer, max(1, limit - reserved))
            out[f"_{key}_cut"] = cut
        return out

    dataset = dataset.map(cut_row, desc="Truncating prompts and completions separately")
    for key in ("prompt", "completion"):
        if f"_{key}_cut" in dataset.column_names:
            stats[key] = sum(dataset[f"_{key}_cut"])
            dataset = dataset.remove_columns(f"_{key}_cut")
    logger.warning(
        "Separate truncation (prompt %s / completion %s tokens): cut %d prompts and %d completions of %d rows.",
        max_prompt_length,
        max_completion_length,
        stats["prompt"],
        stats["completion"],
        len(dataset),
    )
    return dataset


def kbit_device_map() -> dict[str, int] | None:
    """One full copy of a quantized model per process (what TRL's former `get_kbit_device_map` did)."""
    import torch
    from accelerate import PartialState

    if torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return {"": PartialState().local_process_index}
    return None


def align_special_tokens(model, tokenizer) -> None:
    """Model config and generation_config use the tokenizer's EOS and pad (so generation stops where we train)."""
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    for cfg in (model.config, model.generation_config):
        if cfg is None:
            continue
        cfg.pad_token_id = pad_id
        current = cfg.eos_token_id
        ids = [] if current is None else [current] if isinstance(current, int) else list(current)
        if eos_id is not None and eos_id not in ids:
            ids = [eos_id, *ids]
        cfg.eos_token_id = ids[0] if len(ids) == 1 else ids


def resume_checkpoint(training_args) -> str | None:
    """`resume_from_checkpoint` when set, else the last `checkpoint-*` in output_dir, else None."""
    from transformers.trainer_utils import get_last_checkpoint

    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if os.path.isdir(training_args.output_dir):
        return get_last_checkpoint(training_args.output_dir)
    return None


def command_line() -> str:
    """The command that ran this job, with token values removed (for the card)."""
    args = list(sys.argv[1:])
    for i, arg in enumerate(args):
        if "token" in arg.lower() and arg.startswith("--"):
            if "=" in arg:
                args[i] = arg.split("=", 1)[0] + "=<redacted>"
            elif i + 1 < len(args):
                args[i + 1] = "<redacted>"
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "lema-hub"
    prog = "accelerate launch recipes/sft.py" if script == "sft.py" else "lema-hub sft"
    return " ".join([prog, *map(shlex.quote, args)])


def model_card_info(
    script_args, training_args, model_args, trainer, prompt_style: str, metrics: dict
) -> dict:

    world = trainer.accelerator.num_processes
    global_batch = (
        training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    )
    name = training_args.hub_model_id or Path(training_args.output_dir).name
    peft = None
    if model_args.use_peft:
        quant = "4bit-" + model_args.bnb_4bit_quant_type if model_args.load_in_4bit else None
        if model_args.load_in_4bit and model_args.use_bnb_nested_quant:
            quant += "-double-quant"
        peft = {
            "r": model_args.lora_r,
            "lora_alpha": model_args.lora_alpha,
            "lora_dropout": model_args.lora_dropout,
            "target_modules": model_args.lora_target_modules,
            "quantization": quant or ("8bit" if model_args.load_in_8bit else None),
        }
    dataset_name = script_args.dataset_name
    source_datasets = None
    if Path(dataset_name).expanduser().exists():
        source_datasets = _card_source_datasets(Path(dataset_name).expanduser())
        dataset_name = Path(dataset_name).resolve().name  # a folder name, never a local absolute path
    return {
        "model_name": name,
        "base_model": base_model_hub_id(model_args.model_name_or_path),
        "base_model_name": _portable_name(model_args.model_name_or_path),
        "datasets": [dataset_name],
        "source_datasets": source_datasets,
        "dataset_config": script_args.config_name,
        "task": script_args.task,
        "view": script_args.view,
        "prompt_style": prompt_style,
        "adapter": bool(model_args.use_peft),
        "peft": peft,
        "training": {
            "learning_rate": training_args.learning_rate,
            "lr_scheduler_type": str(
                getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
            ),
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
            "num_processes": world,
            "global_batch_size": global_batch,
            "max_length": training_args.max_length,
            "max_prompt_length": script_args.max_prompt_length,
            "max_completion_length": script_args.max_completion_length,
            "packing": training_args.packing,
            "padding_free": training_args.padding_free,
            "optim": str(getattr(training_args.optim, "value", training_args.optim)),
            "max_grad_norm": training_args.max_grad_norm,
            "warmup_ratio": getattr(training_args, "warmup_ratio", None),
            "bf16": training_args.bf16,
            "seed": training_args.seed,
            "global_step": trainer.state.global_step,
        },
        "metrics": {
            "train_loss": metrics.get("train_loss"),
            "runtime_s": metrics.get("train_runtime"),
            "train_samples": metrics.get("train_samples"),
        },
        "recipe": command_line(),
        **({"license": script_args.license} if script_args.license else {}),
    }


def _card_source_datasets(folder: Path) -> list[str] | None:
    """`source_datasets` of a local dataset folder's card (the Hub datasets its problems came from)."""
    from huggingface_hub import DatasetCard

    if not (folder / "README.md").is_file():
        return None
    ids = DatasetCard.load(folder / "README.md").data.to_dict().get("source_datasets") or []
    return [str(d) for d in ids if is_hub_id(str(d))] or None


def _portable_name(name: str) -> str:
    """A model name without local absolute paths (aliases and Hub ids unchanged)."""
    path = Path(name).expanduser()
    return path.name if path.is_absolute() or path.exists() else name


def finalize_model_folder(
    output_dir: Path, info: dict, script_args, training_args, model_args, tokenizer
) -> None:
    """Make the saved folder self-describing: base name in the adapter config, metadata, run record, card."""

    adapter_config = output_dir / "adapter_config.json"
    if adapter_config.is_file():
        # PEFT stores the resolved cache path of the base. The Hub id travels (an embedded alias
        # becomes its Hub id, so `AutoPeftModelForCausalLM.from_pretrained(repo)` works anywhere;
        # lema_hub.models resolves that id to the embedded copy offline). Local folders (possibly
        # fine-tuned, so not their `base_model`) and random tiny test models keep the name as given.
        data = json.loads(adapter_config.read_text())
        name = model_args.model_name_or_path
        is_local = not name.startswith(EMBEDDED_PREFIX) and Path(name).expanduser().exists()
        data["base_model_name_or_path"] = (
            info.get("base_model") if info.get("base_model") and not is_local else name
        )
        adapter_config.write_text(json.dumps(data, indent=2, sort_keys=True))
    tokenizer.save_pretrained(output_dir)
    # The Trainer pickles its arguments here (local output_dir, and hub_token when one was passed);
    # the resolved config already travels, redacted, as lema_hub_config.yaml.
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    _write_model_meta(output_dir, info, adapter=info["adapter"])
    config = config_to_dict(script_args, model_args, training_args)
    summary = {k: v for k, v in info.items() if k != "training"}
    # Pushed by `push_model` (the Trainer's hub settings), not by `finish`.
    finish(output_dir, MODEL, None, summary, recipe="sft", record=config, push=False, model_info=info)


def _write_model_meta(folder: Path, info: dict, adapter: bool) -> None:
    meta = {
        "name": info["model_name"],
        "base_model": info.get("base_model"),
        "base_model_name": info.get("base_model_name"),
        "task": info.get("task"),
        "view": info.get("view"),
        "prompt_style": info.get("prompt_style"),
        "adapter": adapter,
    }
    write_model_meta(folder, meta)


def merge_adapter(output_dir: Path, model_args, info: dict) -> Path:
    """Write `<output_dir>-merged`: the base (unquantized) with the adapter merged in, tokenizer and card.

    A sibling folder, not a subfolder, so pushing the adapter never uploads a full copy of the weights.
    """

    merged_dir = output_dir.with_name(output_dir.name + "-merged")
    dtype = _torch_dtype(model_args.dtype)
    model = load_model(str(output_dir), dtype=dtype if dtype not in (None, "auto") else None)
    tokenizer = load_tokenizer(str(output_dir))
    align_special_tokens(model, tokenizer)
    if info.get("base_model"):  # config.json names the Hub base, not the local cache folder it came from
        model.config._name_or_path = info["base_model"]
    model.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    merged_info = dict(info, adapter=False, model_name=info["model_name"] + "-merged")
    _write_model_meta(merged_dir, merged_info, adapter=False)
    write_model_card(merged_dir, merged_info)
    return merged_dir


def push_model(output_dir: Path, training_args) -> str:
    """One final commit of the finished folder (card included) to `hub_model_id`."""

    if not training_args.hub_model_id:
        raise InvalidInputError("push_to_hub needs hub_model_id (e.g. <ns>/lema-smollm2-135m-gsm8k).")
    return push_folder(
        output_dir,
        training_args.hub_model_id,
        repo_type="model",
        private=bool(training_args.hub_private_repo),
        revision=training_args.hub_revision,
        commit_message="LeMa SFT: final model and card",
        # The Trainer's in-training pushes (hub_strategy every_save) upload its pickled arguments,
        # which hold local paths; the final folder has none, and neither does the final commit.
        delete_patterns=["training_args.bin"],
    )
