"""Model cards a real SFT run wrote: true metadata, and each card's own snippet loads from a Hub.

An adapter and its merged copy are trained from the embedded SmolLM2-135M-Instruct (one step), pushed
to the Hub emulator on 127.0.0.1 beside a copy of the base under its real id, and the Python snippet
of each card is run unmodified (bar `max_new_tokens`) by the real `transformers` / `peft` clients.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EMBEDDED_MODEL, REPO_ROOT
from tests.hub_emulator import USER, Commit, HubEmulator, StoredFile

BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SAMPLE_ENTRY = {
    "dataset_id": "lema-hub/bundled-sample",  # what lema_hub.evaluate writes for the bundled sample
    "task_id": "sample",
    "value": 0.0,
    "n": 12,
    "date": "2026-01-01",
}


def _mixture(folder: Path) -> Path:
    from tests.test_sft import make_mixture

    make_mixture(folder, repeat=2)
    readme = folder / "README.md"
    # The mixture's card names where its problems came from, as `lema-hub build` writes it.
    readme.write_text(
        readme.read_text().replace("---\nconfigs:", "---\nsource_datasets:\n- openai/gsm8k\nconfigs:", 1)
    )
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, embedded_model) -> Path:
    """`lema-hub sft` (in process) from the embedded model: adapter + `-merged`, both with cards."""
    from trl import ModelConfig, SFTConfig

    from lema_hub.sft import SFTScriptArguments, train

    root = tmp_path_factory.mktemp("sft")
    mixture = _mixture(root / "lema-mixture")
    out = root / "lema-smollm2-sample"
    script = SFTScriptArguments(dataset_name=str(mixture), task="sample", view="lema", merge_adapter=True)
    training = SFTConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=1,
        max_length=256,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        hub_model_id=f"{USER}/lema-smollm2-sample",
        seed=0,
    )
    model = ModelConfig(
        model_name_or_path=EMBEDDED_MODEL,
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["all-linear"],
    )
    summary = train(script, training, model)
    from lema_hub.cards.model import write_eval_results

    for folder in (out, Path(summary["merged_dir"])):  # what `lema-hub evaluate` does on the sample
        write_eval_results(folder, [SAMPLE_ENTRY], "| detail | 0.0 |\n|---|---|")
    return out


def _card(folder: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def test_adapter_names_the_real_hub_base_and_cards_tell_the_truth(trained):
    merged = trained.with_name(trained.name + "-merged")
    adapter_config = json.loads((trained / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == BASE_ID
    assert json.loads((merged / "config.json").read_text()).get("_name_or_path", BASE_ID) == BASE_ID
    for folder, relation in ((trained, "adapter"), (merged, "finetune")):
        card = _card(folder)
        assert card.data.base_model == BASE_ID and card.data.base_model_relation == relation
        assert card.data.datasets == ["openai/gsm8k"]  # from the mixture's card; the folder is local
        assert "embedded:" not in card.data.to_yaml()
        # The bundled sample is not a Hub dataset: no `.eval_results/`, and the card says what it is.
        assert not (folder / ".eval_results").exists()
        assert ".eval_results" not in card.text
        assert "lema-hub/bundled-sample" not in card.text
        assert "12 held-out problems written for lema_hub" in card.text
        assert "local folder written by `lema-hub build`, not a Hub dataset" in card.text
        assert "licensed Apache-2.0" in card.text and "ASDiv: CC BY-NC 4.0" in card.text
        # A math model in math terms (a CSQA-trained one: tests/test_csqa_pipeline.py).
        assert "pass@1 (answers compared with math-verify)" in card.text and "math" in card.data.tags
        assert "Natalia sold clips" in card.text and "Please solve the following math problem." in card.text
        assert "CommonsenseQA" not in card.text and "candidates" not in card.text
    # A Hub benchmark does go to `.eval_results/`, and only then does the card mention it.
    from lema_hub.cards.model import write_eval_results

    write_eval_results(merged, [{"dataset_id": "openai/gsm8k", "task_id": "gsm8k", "value": 1.0}])
    assert (merged / ".eval_results" / "gsm8k.yaml").is_file()
    assert "`.eval_results/`" in _card(merged).text and "12 held-out problems" in _card(merged).text
    (merged / ".eval_results" / "gsm8k.yaml").unlink()
    (merged / ".eval_results").rmdir()


_SNIPPET_RE = re.compile(r"```python\n(.*?)```", re.S)

_RUN_SNIPPETS = r"""
import json, sys
from huggingface_hub import ModelCard
for repo in json.loads(sys.argv[1]):
    card = ModelCard.load(repo)  # the card as the Hub serves it
    snippet = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    snippet = snippet.replace("max_new_tokens=512", "max_new_tokens=4")
    print("<<<", repo, flush=True)
    exec(compile(snippet, repo + ":README.md", "exec"), {})
    print(">>>", repo, flush=True)
"""


def _seed_repo(hub: HubEmulator, repo_id: str, folder: Path) -> None:
    """Put a folder on the emulator as a model repo (the base model the Hub already has)."""
    repo = hub.state.create("model", repo_id, private=False)
    parent = repo.commits[repo.branches["main"]]
    files = dict(parent.files)
    for p in folder.iterdir():
        if p.is_file():
            files[p.name] = StoredFile(p.read_bytes(), lfs=p.suffix == ".safetensors")
    commit = Commit("b" * 40, parent.oid, "upload base", files)
    repo.commits[commit.oid] = commit
    repo.branches["main"] = commit.oid


@pytest.mark.slow
def test_each_cards_own_snippet_loads_through_a_hub(trained, tmp_path):
    from lema_hub.models import resolve_model

    merged = trained.with_name(trained.name + "-merged")
    repos = {trained: f"{USER}/lema-smollm2-sample", merged: f"{USER}/lema-smollm2-sample-merged"}
    for folder, repo_id in repos.items():  # the snippet names the repo the card was written for
        code = _SNIPPET_RE.search(_card(folder).text).group(1)
        assert f'from_pretrained("{repo_id}")' in code, code
    with HubEmulator() as hub:
        _seed_repo(hub, BASE_ID, Path(resolve_model(EMBEDDED_MODEL)))
        env = hub.client_env(tmp_path)
        env.update(PYTHONPATH=str(REPO_ROOT), TOKENIZERS_PARALLELISM="false")
        push = "from lema_hub.push import push_folder; import sys; push_folder(sys.argv[1], sys.argv[2], repo_type='model')"
        for folder, repo_id in repos.items():
            proc = subprocess.run(
                [sys.executable, "-c", push, str(folder), repo_id],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
        # A fresh user: no lema_hub on the path, an empty HF cache, online against the "Hub".
        env.pop("PYTHONPATH")
        proc = subprocess.run(
            [sys.executable, "-c", _RUN_SNIPPETS, json.dumps(list(repos.values()))],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert hub.state.unknown_routes == [], hub.state.unknown_routes
        for repo_id in repos.values():
            assert f">>> {repo_id}" in proc.stdout
        # The adapter's base came from the Hub under its real id.
        assert any(BASE_ID in path and "model.safetensors" in path for _, path in hub.state.requests)
        assert sorted(
            yaml.safe_load(hub.files(repos[trained], "model")["README.md"].decode().split("---")[1])[
                "datasets"
            ]
        ) == ["openai/gsm8k"]


def test_adapter_loads_offline_through_its_hub_base_id(trained, monkeypatch):
    """Offline, the base's Hub id resolves to the embedded copy, so lema_hub loads the adapter."""
    import torch

    from lema_hub.models import load_model, load_tokenizer, resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model(BASE_ID) == resolve_model(EMBEDDED_MODEL)
    model, tok = load_model(str(trained)), load_tokenizer(str(trained))
    ids = tok("2 + 2 =", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


def test_demo_states_base_model_and_training_budget_from_the_metadata(trained):
    from lema_hub.demo.data import model_facts
    from lema_hub.demo.render import _facts_line

    merged = trained.with_name(trained.name + "-merged")
    facts = model_facts(str(merged))  # the merged folder: the budget comes from its adapter's records
    assert facts["base_model"] == BASE_ID and facts["steps"] == 1 and facts["batch_size"] == 1
    assert facts["train_rows"] == 8 and facts["datasets"] == ["lema-mixture"]
    line = _facts_line("LeMa model", facts)
    assert f"[{BASE_ID}](https://huggingface.co/{BASE_ID})" in line
    assert "training budget: 1 optimizer steps × 1 rows per device, 8 training rows" in line


@pytest.mark.parametrize(
    ("source", "license_", "hub_id"),
    [("gsm8k", "mit", "openai/gsm8k"), ("asdiv", "cc-by-nc-4.0", "EleutherAI/asdiv")],
)
def test_dataset_cards_carry_each_sources_licence(tmp_path, source, license_, hub_id):
    from huggingface_hub import DatasetCard

    from lema_hub.artifacts import save_dataset_config
    from lema_hub.cards.dataset import write_dataset_card
    from tests.test_hub import sample_rows

    rows = [
        dict(r, source=source, problem_id=r["problem_id"].replace("gsm8k", source)) for r in sample_rows(2, 2)
    ]
    save_dataset_config(tmp_path, f"{source}-samples", {"train": rows})
    save_dataset_config(tmp_path, source, {"train": [r for r in rows if r["verdict"] == "wrong"]})
    write_dataset_card(tmp_path, "mistakes")
    card = DatasetCard.load(tmp_path / "README.md")
    assert card.data.license == license_ and card.data.source_datasets == [hub_id]
    assert (
        "ASDiv is CC BY-NC 4.0" in card.text and "like the lema_hub code that built this dataset" in card.text
    )


def test_pushed_mixture_is_named_in_the_cards_datasets(trained, tmp_path):
    """The quickstart names `<ns>/lema-mixture` in each adapter's card before pushing it."""
    import shutil

    from lema_hub.cards.model import add_model_card_datasets

    shutil.copy(trained / "README.md", tmp_path / "README.md")
    add_model_card_datasets(tmp_path, [f"{USER}/lema-mixture", "openai/gsm8k"])
    card = _card(tmp_path)
    assert card.data.datasets == ["openai/gsm8k", f"{USER}/lema-mixture"]
    assert card.data.base_model == BASE_ID and card.text == _card(trained).text
