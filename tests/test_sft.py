"""SFT: completion-only loss on real batches, 2-process training, resume, merge, config errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TINY = "tiny:smollm2"  # tests.conftest.TINY_MODEL


def _rows(n_distinct: int = 4) -> list[dict]:
    rows = []
    for i in range(n_distinct):
        # Different lengths so the collator has to pad.
        q = f"Tom has {i + 2} apples and buys {i + 3} more{' apples' * i}. How many apples does he have?"
        prompt = (
            f"Please solve the following math problem.\nQuestion: {q}\nAnswer: Let's think step by step.\n"
        )
        completion = f"Tom has {i + 2} + {i + 3} = {2 * i + 5} apples. The answer is {2 * i + 5}."
        kind = "cot" if i % 2 == 0 else "correction"
        rows.append(
            {"kind": kind, "problem_id": f"sample/train/{i}", "prompt": prompt, "completion": completion}
        )
    return rows


def make_mixture(folder: Path, style: str = "chat", repeat: int = 1) -> Path:
    """A Hub-layout mixture folder with configs sample-lema and sample-cot (parquet + README YAML)."""
    import datasets

    rows = _rows()
    configs = []
    for view, selected in (("lema", rows), ("cot", [r for r in rows if r["kind"] == "cot"])):
        data = selected * repeat
        if style == "chat":
            data = [
                dict(
                    r,
                    prompt=[{"role": "user", "content": r["prompt"]}],
                    completion=[{"role": "assistant", "content": r["completion"]}],
                )
                for r in data
            ]
        name = f"sample-{view}"
        (folder / "data" / name).mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(data).to_parquet(
            str(folder / "data" / name / "train-00000-of-00001.parquet")
        )
        configs.append(
            f"- config_name: {name}\n  data_files:\n  - split: train\n    path: data/{name}/train-*.parquet"
        )
    (folder / "README.md").write_text("---\nconfigs:\n" + "\n".join(configs) + "\n---\n# Tiny mixture\n")
    return folder


def tiny_config(path: Path, mixture: Path, output_dir: Path, **overrides) -> Path:
    import yaml

    config = {
        "model_name_or_path": TINY,
        "dataset_name": str(mixture),
        "task": "sample",
        "view": "lema",
        "use_peft": True,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "lora_target_modules": ["all-linear"],
        "learning_rate": 5.0e-3,
        "lr_scheduler_type": "constant",
        "max_length": 128,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": 8,
        "logging_steps": 1,
        "save_strategy": "no",
        "bf16": False,
        "activation_checkpointing": False,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "output_dir": str(output_dir),
        "seed": 0,
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


def _parse(config: Path, *extra: str):
    from trl import ModelConfig, SFTConfig

    from lema_hub.configs import parse_config
    from lema_hub.sft import SFTScriptArguments

    return parse_config((SFTScriptArguments, SFTConfig, ModelConfig), ["--config", str(config), *extra])


@pytest.mark.parametrize("style", ["chat", "plain"])
def test_real_batch_masks_prompt_and_trains_on_completion_with_eos(tmp_path, tiny_model, style):
    from lema_hub.sft import build_trainer

    mixture = make_mixture(tmp_path / "mixture", style="chat" if style == "chat" else "plain")
    config = tiny_config(tmp_path / "c.yaml", mixture, tmp_path / "out", prompt_style=style)
    trainer, prompt_style = build_trainer(*_parse(config))
    assert prompt_style == style
    tok = trainer.processing_class
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(rows)
    assert batch["input_ids"].shape == batch["labels"].shape
    assert (batch["attention_mask"] == 0).any(), "rows of different lengths should be padded"
    completions = {r["completion"] for r in _rows()}
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        trained = labels != -100
        assert not trained[mask == 0].any(), "padding must not be trained on"
        # Trained tokens form one contiguous block at the end of the real tokens (the completion).
        positions = trained.nonzero().flatten().tolist()
        assert positions == list(range(positions[0], positions[-1] + 1))
        assert (labels[trained] == ids[trained]).all()
        prompt_text = tok.decode(ids[: positions[0]])
        assert "Please solve the following math problem." in prompt_text
        assert "Answer: Let's think step by step." in prompt_text
        target = tok.decode(ids[trained])
        assert tok.eos_token_id in ids[trained].tolist(), f"EOS must be trained on: {target!r}"
        body = target.split(tok.eos_token)[0]
        assert body in completions, target
        assert trained.sum() < mask.sum()


@pytest.mark.slow
def test_two_processes_train_save_one_adapter_and_card(tmp_path, tiny_model, repo_root):
    mixture = make_mixture(tmp_path / "lema-mixture", repeat=8)
    out = tmp_path / "lema-tiny-sample"
    config = tiny_config(tmp_path / "c.yaml", mixture, out, use_cpu=True)
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",  # the shipped CPU example: 2 processes, gloo, fp32 (with use_cpu in the config)
        str(repo_root / "recipes" / "accelerate_configs" / "cpu_multiprocess.yaml"),
        str(repo_root / "recipes" / "sft.py"),
        "--config",
        str(config),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 8
    # 32 rows, 2 processes x 4 rows a step: 8 steps are 2 epochs (one process would make it 1).
    assert state["epoch"] == pytest.approx(2.0), state["epoch"]
    # A random tiny model starts near ln(vocab) ~ 10.8; seeded, so the drop is reproducible.
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.2, losses
    assert sorted(p.name for p in out.rglob("adapter_model.safetensors")) == ["adapter_model.safetensors"]
    assert not list(out.rglob("model.safetensors"))
    cards = list(out.rglob("README.md"))
    assert cards == [out / "README.md"]
    card = cards[0].read_text()
    assert TINY in card and "lema-mixture" in card
    assert "| `num_processes` | 2 |" in card  # and the card records the real world size
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == TINY
    targeted = {m.rsplit(".", 1)[-1] for m in adapter_config["target_modules"]}
    assert targeted >= {"q_proj", "v_proj", "down_proj"}, targeted


@pytest.mark.slow
def test_resume_continues_from_checkpoint_and_merges(tmp_path, tiny_model):
    from lema_hub.cli import run_stage

    mixture = make_mixture(tmp_path / "mixture", repeat=4)
    out = tmp_path / "out"
    config = tiny_config(tmp_path / "c.yaml", mixture, out, max_steps=2, save_strategy="steps", save_steps=2)
    first = run_stage("sft", ["--config", str(config)])
    assert first["resumed_from"] is None and first["global_step"] == 2
    assert (out / "checkpoint-2").is_dir()

    second = run_stage("sft", ["--config", str(config), "--max_steps", "4", "--merge_adapter", "true"])
    assert Path(second["resumed_from"]).name == "checkpoint-2"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps == [1, 2, 3, 4], "resumed run must continue at step 3, not restart from 0"

    from lema_hub.models import is_adapter, load_model, load_tokenizer

    merged = Path(second["merged_dir"])
    assert (merged / "config.json").is_file() and not is_adapter(str(merged))
    assert json.loads((merged / "lema_hub_model.json").read_text())["adapter"] is False
    model, tok = load_model(str(merged)), load_tokenizer(str(merged))
    assert tok.eos_token_id in _as_list(model.generation_config.eos_token_id)
    assert model.generation_config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    # The adapter folder loads over its base too (the base name in adapter_config resolves offline).
    assert load_model(str(out)).config.num_hidden_layers == model.config.num_hidden_layers


def _as_list(x) -> list:
    return [x] if isinstance(x, int) else list(x)


def test_bad_configs_fail_with_clear_errors(tmp_path, tiny_model):
    from lema_hub.configs import ConfigError
    from lema_hub.sft import build_trainer

    mixture = make_mixture(tmp_path / "mixture")
    with pytest.raises(ConfigError, match="lora_rank"):
        _parse(tiny_config(tmp_path / "a.yaml", mixture, tmp_path / "o", lora_rank=8))
    with pytest.raises(ValueError, match="sample-nope"):
        build_trainer(*_parse(tiny_config(tmp_path / "b.yaml", mixture, tmp_path / "o", view="nope")))
    with pytest.raises(ValueError, match="assistant_only_loss"):
        build_trainer(
            *_parse(tiny_config(tmp_path / "c.yaml", mixture, tmp_path / "o", assistant_only_loss=True))
        )
    with pytest.raises(ValueError, match="prompt_style"):
        _parse(tiny_config(tmp_path / "d.yaml", mixture, tmp_path / "o", prompt_style="markdown"))


def test_size_limits_and_view(tmp_path, tiny_model):
    from lema_hub.sft import SFTScriptArguments, load_mixture

    mixture = make_mixture(tmp_path / "mixture", repeat=3)
    full = load_mixture(SFTScriptArguments(dataset_name=str(mixture), task="sample"))
    assert len(full) == 12 and set(full["kind"]) == {"cot", "correction"}
    capped = load_mixture(
        SFTScriptArguments(dataset_name=str(mixture), task="sample", max_correction_samples=2)
    )
    assert capped["kind"].count("correction") == 2 and capped["kind"].count("cot") == 6
    cot = load_mixture(SFTScriptArguments(dataset_name=str(mixture), task="sample", view="cot"))
    assert set(cot["kind"]) == {"cot"}
    again = load_mixture(SFTScriptArguments(dataset_name=str(mixture), task="sample", max_train_samples=5))
    assert (
        again["problem_id"]
        == load_mixture(SFTScriptArguments(dataset_name=str(mixture), task="sample", max_train_samples=5))[
            "problem_id"
        ]
    )
    assert len(again) == 5


@pytest.mark.slow
def test_push_to_hub_during_training_and_final_card(tmp_path, tiny_model, repo_root):
    """hub_strategy every_save pushes while training; the final commit carries our card; no token leaks."""
    from tests.hub_emulator import TOKEN, USER, HubEmulator

    mixture = make_mixture(tmp_path / "mixture", repeat=4)
    out = tmp_path / "lema-tiny-push"
    repo_id = f"{USER}/lema-tiny-push"
    config = tiny_config(
        tmp_path / "c.yaml",
        mixture,
        out,
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        push_to_hub=True,
        hub_model_id=repo_id,
        hub_strategy="every_save",
    )
    with HubEmulator() as hub:
        env = hub.client_env(tmp_path)
        env.update(PYTHONPATH=str(repo_root), TOKENIZERS_PARALLELISM="false")
        del env["HF_TOKEN"]  # the token comes from the command line, the way users pass it to TRL
        proc = subprocess.run(
            [
                sys.executable,
                str(repo_root / "recipes" / "sft.py"),
                "--config",
                str(config),
                "--hub_token",
                TOKEN,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert hub.state.unknown_routes == [], hub.state.unknown_routes
        commits = hub.commits(repo_id, repo_type="model")
        files = hub.files(repo_id, repo_type="model")

    # At least one upload while training (every_save) before the final commit with our card.
    assert len(commits) >= 3, [c.message for c in commits]  # initial + during training + final
    assert commits[0].message == "LeMa SFT: final model and card"
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(files)
    assert files["adapter_model.safetensors"] == (out / "adapter_model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert card == (out / "README.md").read_text() and TINY in card
    assert not any(name.endswith("training_args.bin") for name in files)
    assert not [name for name, data in files.items() if TOKEN.encode() in data]
    # Checkpoints keep the Trainer's pickled arguments (resume needs them), without the token.
    assert (out / "checkpoint-4" / "training_args.bin").is_file()
    assert not [p for p in out.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert TOKEN not in proc.stdout + proc.stderr


# ------------------------------------------------------------------ the recipes' launch configs
ACCELERATE_CONFIGS = {  # file -> (distributed type, processes, plugin section)
    "cpu_multiprocess.yaml": ("MULTI_GPU", 2, None),
    "ddp.yaml": ("MULTI_GPU", 8, None),
    "fsdp.yaml": ("FSDP", 8, "fsdp_config"),
    "zero3.yaml": ("DEEPSPEED", 8, "deepspeed_config"),
}


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIGS))
def test_launch_configs_parse_with_accelerates_loader(repo_root, name):
    from accelerate.commands.config.config_args import load_config_from_file

    # ClusterConfig(**yaml) raises on a key accelerate does not know, and checks the enum values.
    cfg = load_config_from_file(str(repo_root / "recipes" / "accelerate_configs" / name))
    kind, processes, plugin = ACCELERATE_CONFIGS[name]
    assert str(cfg.distributed_type).rsplit(".", 1)[-1] == kind and cfg.num_processes == processes
    if plugin == "fsdp_config":
        assert (
            cfg.fsdp_config["fsdp_version"] == 2
            and cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        )
    if plugin == "deepspeed_config":
        assert cfg.deepspeed_config["zero_stage"] == 3 and cfg.deepspeed_config["zero3_save_16bit_model"]
    assert sorted(p.name for p in (repo_root / "recipes" / "accelerate_configs").glob("*.yaml")) == sorted(
        ACCELERATE_CONFIGS
    ), "a new launch config needs a row here"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml", "zero3.yaml"])
def test_recipe_launch_line_trains_on_two_cpu_processes(tmp_path, tiny_model, repo_root, name):
    """The README's launch line with a recipe config, on CPU: 2 processes over gloo, fp32.

    On CPU accelerate runs every multi-process type as DDP over gloo (it enables FSDP only for GPU
    types and DeepSpeed needs `deepspeed`), so this checks the launch line and the training path of
    each config, not the sharding itself, which needs GPUs.
    """
    if name == "zero3.yaml":
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed: zero3.yaml is only parsed")
    mixture = make_mixture(tmp_path / "lema-mixture", repeat=4)
    out = tmp_path / "out"
    # FSDP / ZeRO-3 are the full fine-tuning configs; DDP is the (Q)LoRA one.
    config = tiny_config(
        tmp_path / "c.yaml", mixture, out, use_cpu=True, max_steps=2, use_peft=name == "ddp.yaml"
    )
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    with socket.socket() as s:  # a free port: another launch may hold accelerate's default
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(repo_root / "recipes" / "accelerate_configs" / name),
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port),
        str(repo_root / "recipes" / "sft.py"), "--config", str(config),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and len([e for e in state["log_history"] if "loss" in e]) == 2
    assert "| `num_processes` | 2 |" in (out / "README.md").read_text()
    weights = "adapter_model.safetensors" if name == "ddp.yaml" else "model.safetensors"
    assert (out / weights).is_file()
    from lema_hub.models import load_model

    assert load_model(str(out)).config.num_hidden_layers >= 1  # the saved model loads back whole
