"""Hub-layout folders, run records and pushes, round-tripped through the unmodified Hub clients."""

from __future__ import annotations

from typing import Any

from lema_hub.schema import CORRECTOR_TOKENS

PROMPT_ID = "lema-gsm8k@sha256:3f2a9c1b7d4e"
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 512, "seed": 1234}

_QUESTIONS = [
    (
        "Tom has 3 boxes with 12 apples each. He gives away 10 apples. How many apples are left?",
        "26",
        [
            "Tom has 3 * 12 = 36 apples.",
            "He gives away 10, so 36 - 10 = 26 apples are left.",
            "The answer is 26.",
        ],
    ),
    (
        "A pen costs $2 and a notebook costs $5. How much do 4 pens and 2 notebooks cost?",
        "18",
        [
            "4 pens cost 4 * 2 = 8 dollars.",
            "2 notebooks cost 2 * 5 = 10 dollars.",
            "Together 8 + 10 = 18 dollars.",
            "The answer is 18.",
        ],
    ),
    (
        "Sara reads 15 pages a day. How many pages does she read in 2 weeks?",
        "210",
        ["Two weeks have 2 * 7 = 14 days.", "She reads 15 * 14 = 210 pages.", "The answer is 210."],
    ),
]


def problem(i: int, source: str = "gsm8k") -> dict[str, Any]:
    q, a, steps = _QUESTIONS[i % len(_QUESTIONS)]
    return {
        "problem_id": f"{source}/train/{i}",
        "source": source,
        "split": "train",
        "question": q,
        "gold_solution": " ".join(steps[:-1]) + f"\n#### {a}",
        "gold_answer": a,
        "level": None,
        "subject": None,
    }


def sample_rows(
    n_problems: int = 3, per_problem: int = 2, generator: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
):
    """Sample rows (DESIGN schema): even sample_index right, odd wrong (first step miscalculated)."""
    rows = []
    for i in range(n_problems):
        p = problem(i)
        gold_steps = _QUESTIONS[i % len(_QUESTIONS)][2]
        for k in range(per_problem):
            wrong = k % 2 == 1
            steps = list(gold_steps)
            if wrong:
                steps = [steps[0].replace("=", "= 1 +"), *steps[1:-1], "The answer is 7."]
            rows.append(
                {
                    **p,
                    "generator": generator,
                    "sample_index": k,
                    "sampling": dict(SAMPLING),
                    "completion": " ".join(steps),
                    "steps": steps,
                    "predicted_answer": "7" if wrong else p["gold_answer"],
                    "verdict": "wrong" if wrong else "correct",
                    "finish_reason": "stop",
                    "prompt_tokens": 41 + i,
                    "completion_tokens": 30 + 3 * k,
                    "pass_rate": 0.5,
                }
            )
    return rows


def correction_rows(mistakes: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(accepted, rejected) corrections for the given mistakes; the last one is rejected."""
    accepted, rejected = [], []
    for j, m in enumerate(mistakes):
        gold_steps = _QUESTIONS[int(m["problem_id"].rsplit("/", 1)[1]) % len(_QUESTIONS)][2]
        ok = j < len(mistakes) - 1
        corrector = "reference" if j == 0 else "gpt-4o-2024-08-06"
        row = {
            **m,
            "corrector": corrector,
            "corrector_prompt": PROMPT_ID,
            "raw_output": " Step 1.\nExplanation: The multiplication is wrong.\nCorrect Solution:\n{\n"
            + "\n".join(f"Step {s}: {t}" for s, t in enumerate(gold_steps, 1))
            + "\n}",
            "incorrect_step": 1,
            "explanation": "The multiplication is wrong: it adds an extra 1.",
            "corrected_steps": list(gold_steps) if ok else [*gold_steps[:-1], "The answer is 9."],
            "corrected_answer": m["gold_answer"] if ok else "9",
            "accepted": ok,
            "reject_reason": None if ok else "corrected answer 9 != gold",
            "reference_step": 1,
            CORRECTOR_TOKENS.prompt: 900 + j,  # the names the correct stage writes
            CORRECTOR_TOKENS.completion: 120 + j,
        }
        (accepted if ok else rejected).append(row)
    return accepted, rejected


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from lema_hub.artifacts import (  # noqa: E402
    HubArgs,
    discover_configs,
    find_leaks,
    load_artifact,
    save_dataset_config,
    write_run_record,
)
from lema_hub.cards.dataset import write_dataset_card  # noqa: E402
from lema_hub.push import maybe_push  # noqa: E402
from tests.hub_emulator import TOKEN, HubEmulator  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
NS = "lema-tester"


def _front_matter(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    return yaml.safe_load(text.split("---\n")[1])


def build_mistakes(folder: Path, n_problems: int = 4) -> list[dict]:
    samples = sample_rows(n_problems, 2)
    save_dataset_config(folder, "gsm8k-samples", {"train": samples})
    save_dataset_config(folder, "gsm8k", {"train": [r for r in samples if r["verdict"] == "wrong"]})
    write_run_record(
        folder,
        {"generators": ["HuggingFaceTB/SmolLM2-135M-Instruct"], "output_dir": str(folder)},
        {"samples": len(samples)},
        "collect",
    )
    write_dataset_card(folder, "mistakes")
    return samples


def build_corrections(folder: Path, samples: list[dict], repo_id: str | None = None) -> tuple[list, list]:
    accepted, rejected = correction_rows([r for r in samples if r["verdict"] == "wrong"])
    save_dataset_config(folder, "gsm8k", {"train": accepted})
    save_dataset_config(folder, "gsm8k-rejected", {"train": rejected})
    write_run_record(
        folder,
        {
            "corrector": "gpt-4o-2024-08-06",
            "api_key_env": "OPENAI_API_KEY",
            "hub_token": TOKEN,
            "hub_repo_id": repo_id,
        },
        {"accepted": len(accepted)},
        "correct",
    )
    write_dataset_card(folder, "corrections")
    return accepted, rejected


def _normalize(rows: list[dict]) -> list[dict]:
    return json.loads(json.dumps(rows, sort_keys=True))


def test_save_dataset_config_layout_and_offline_load(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "lema-mistakes"
    samples = sample_rows(3, 2)
    save_dataset_config(folder, "gsm8k-samples", {"train": samples}, max_shard_rows=4)
    names = sorted(p.name for p in (folder / "data" / "gsm8k-samples").iterdir())
    assert [n[: len("train-00000-of-00002")] for n in names] == [
        "train-00000-of-00002",
        "train-00001-of-00002",
    ]
    # Each name carries the hash of its own bytes, and the YAML lists the files by name.
    for p in (folder / "data" / "gsm8k-samples").iterdir():
        assert p.name.endswith(f"-{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}.parquet")
    (folder / "README.md").write_text((folder / "README.md").read_text() + "\nA hand-written note.\n")
    wrong = [r for r in samples if r["verdict"] == "wrong"]
    save_dataset_config(folder, "gsm8k", {"train": datasets.Dataset.from_list(wrong)})
    meta = _front_matter(folder)
    assert [c["config_name"] for c in meta["configs"]] == ["gsm8k-samples", "gsm8k"]
    assert [c for c in meta["configs"] if c.get("default")] == [meta["configs"][1]]  # the main config
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": [f"data/gsm8k-samples/{n}" for n in names]}
    ]
    assert "A hand-written note." in (folder / "README.md").read_text()  # the body is kept
    got = datasets.load_dataset(str(folder), "gsm8k-samples", split="train")
    assert _normalize(got.to_list()) == _normalize(samples)
    assert _normalize(load_artifact(str(folder)).to_list()) == _normalize(wrong)  # default = main config
    # Re-writing a config replaces only its own files (fewer shards now) and keeps the other config.
    save_dataset_config(folder, "gsm8k-samples", {"train": samples[:2]})
    [only] = discover_configs(folder)["gsm8k-samples"]["train"]
    assert re.fullmatch(r"data/gsm8k-samples/train-00000-of-00001-[0-9a-f]{16}\.parquet", only)
    assert _front_matter(folder)["configs"][0]["data_files"] == [{"split": "train", "path": only}]
    assert len(datasets.load_dataset(str(folder), "gsm8k", split="train")) == len(wrong)
    # An empty split is not written (datasets cannot load zero rows); the config disappears.
    save_dataset_config(folder, "gsm8k-samples", {"train": []})
    assert [c["config_name"] for c in _front_matter(folder)["configs"]] == ["gsm8k"]


@pytest.mark.parametrize("bad", ["", "a/b", "has space", "../x"])
def test_save_dataset_config_rejects_bad_config_names(tmp_path, bad):
    with pytest.raises(ValueError, match="config name"):
        save_dataset_config(tmp_path / "f", bad, {"train": sample_rows(1, 1)})


def test_run_record_merges_recipes_and_hides_secrets(tmp_path):
    folder = tmp_path / "art"
    write_run_record(
        folder,
        {
            "model": str(tmp_path / "models" / "m"),
            "openai_api_key": "sk-" + "a" * 40,
            "hub_token": TOKEN,
            "api_key_env": "OPENAI_API_KEY",
        },
        {"n": 1},
        "collect",
    )
    write_run_record(folder, {"corrector": "reference", "note": f"token {TOKEN}"}, {"n": 2}, "correct")
    configs = yaml.safe_load((folder / "lema_hub_config.yaml").read_text())
    summaries = json.loads((folder / "run_summary.json").read_text())
    assert set(configs) == set(summaries) == {"collect", "correct"}
    assert configs["collect"]["openai_api_key"] == configs["collect"]["hub_token"] == "<redacted>"
    assert configs["collect"]["api_key_env"] == "OPENAI_API_KEY"  # the variable's name is not a secret
    assert configs["collect"]["model"] == "<local>/m"
    assert TOKEN not in configs["correct"]["note"]
    assert find_leaks(folder) == []


def test_maybe_push_off_and_missing_repo_id(tmp_path):
    assert maybe_push(tmp_path, HubArgs(), "dataset", "collect") is None
    with pytest.raises(ValueError, match="hub_repo_id"):
        maybe_push(tmp_path, HubArgs(push_to_hub=True), "dataset", "collect")


# ------------------------------------------------------------------------------------------------
# Round trips through the unmodified huggingface_hub / datasets clients against the emulator
# ------------------------------------------------------------------------------------------------

_CLIENT = r"""
import json, sys
args = json.loads(sys.argv[1])
out = {}
from lema_hub.artifacts import HubArgs
from lema_hub.push import maybe_push, push_folder
for step in args["steps"]:
    kind = step["do"]
    if kind == "push":
        out.setdefault("urls", []).append(push_folder(step["folder"], step["repo_id"], repo_type=step.get("repo_type", "dataset"),
                                        revision=step.get("revision"), private=step.get("private", False)))
    elif kind == "maybe_push":
        hub = HubArgs(push_to_hub=True, hub_repo_id=step["repo_id"], hub_revision=step.get("revision"))
        out.setdefault("urls", []).append(maybe_push(step["folder"], hub, step.get("repo_type", "dataset"), step["recipe"]))
    elif kind == "load":
        import datasets
        ds = datasets.load_dataset(step["repo_id"], step["config"], split="train", revision=step.get("revision"))
        out.setdefault("loaded", {})[step["config"] + "@" + str(step.get("revision"))] = ds.to_list()
    elif kind == "card":
        from huggingface_hub import DatasetCard
        out["card"] = DatasetCard.load(step["repo_id"], repo_type="dataset").data.to_dict()
    elif kind == "snapshot":
        from huggingface_hub import snapshot_download
        out["snapshot"] = snapshot_download(step["repo_id"], repo_type=step.get("repo_type", "model"),
                                            local_dir=step["local_dir"])
    elif kind == "cli":
        from lema_hub.cli import main
        main(step["argv"])
    elif kind == "whoami":
        from huggingface_hub import whoami
        out["whoami"] = whoami()["name"]
print("<<<" + json.dumps(out, default=str) + ">>>")
"""


def run_client(hub: HubEmulator, tmp_path: Path, steps: list[dict]) -> dict:
    """Run the real clients in a subprocess (online, pointed at the emulator)."""
    env = hub.client_env(tmp_path)
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", _CLIENT, json.dumps({"steps": steps})],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert hub.state.unknown_routes == [], hub.state.unknown_routes
    return json.loads(proc.stdout.split("<<<", 1)[1].rsplit(">>>", 1)[0])


@pytest.fixture
def hub():
    with HubEmulator() as emulator:
        yield emulator


def test_push_and_load_datasets_round_trip(tmp_path, hub):
    mistakes_dir, corr_dir = tmp_path / "lema-mistakes", tmp_path / "lema-corrections"
    samples = build_mistakes(mistakes_dir)
    accepted, rejected = build_corrections(corr_dir, samples, repo_id=f"{NS}/lema-corrections")
    out = run_client(
        hub,
        tmp_path,
        [
            {"do": "whoami"},
            {"do": "push", "folder": str(mistakes_dir), "repo_id": f"{NS}/lema-mistakes"},
            {
                "do": "maybe_push",
                "folder": str(corr_dir),
                "repo_id": f"{NS}/lema-corrections",
                "recipe": "correct",
            },
            {"do": "load", "repo_id": f"{NS}/lema-corrections", "config": "gsm8k"},
            {"do": "load", "repo_id": f"{NS}/lema-mistakes", "config": "gsm8k-samples"},
            {"do": "card", "repo_id": f"{NS}/lema-corrections"},
        ],
    )
    assert out["whoami"] == NS
    assert _normalize(out["loaded"]["gsm8k@None"]) == _normalize(accepted)
    assert _normalize(out["loaded"]["gsm8k-samples@None"]) == _normalize(samples)
    card = out["card"]
    assert card["pretty_name"].startswith("LeMa corrections")
    assert card["source_datasets"] == ["openai/gsm8k"] and card["license"] == "mit"
    assert {c["config_name"] for c in card["configs"]} == {"gsm8k", "gsm8k-rejected"}
    # One commit per push, its message naming the recipe and the configs; every file arrived intact.
    commits = hub.commits(f"{NS}/lema-corrections")
    assert len(commits) == 2 and commits[0].message == "lema-hub correct: configs gsm8k, gsm8k-rejected"
    assert out["urls"][1].endswith(commits[0].oid)
    local = {p.relative_to(corr_dir).as_posix(): p.read_bytes() for p in corr_dir.rglob("*") if p.is_file()}
    remote = {k: v for k, v in hub.files(f"{NS}/lema-corrections").items() if k != ".gitattributes"}
    assert remote == local
    assert any(p.startswith("images/") and p.endswith(".png") for p in remote)
    assert all(TOKEN.encode() not in data for data in remote.values())

    # A second push adding a config keeps the first; a branch push leaves main alone.
    more = sample_rows(2, 2, generator="Qwen/Qwen2.5-0.5B-Instruct")
    for r in more:
        r.update(source="math", problem_id=r["problem_id"].replace("gsm8k", "math"), level=3)
    acc2, _ = correction_rows([r for r in more if r["verdict"] == "wrong"] * 2)
    save_dataset_config(corr_dir, "math", {"train": acc2})
    write_dataset_card(corr_dir, "corrections")
    out2 = run_client(
        hub,
        tmp_path,
        [
            {"do": "push", "folder": str(corr_dir), "repo_id": f"{NS}/lema-corrections", "revision": "v2"},
            {"do": "load", "repo_id": f"{NS}/lema-corrections", "config": "math", "revision": "v2"},
            {"do": "load", "repo_id": f"{NS}/lema-corrections", "config": "gsm8k", "revision": "v2"},
        ],
    )
    assert _normalize(out2["loaded"]["math@v2"]) == _normalize(acc2)
    assert _normalize(out2["loaded"]["gsm8k@v2"]) == _normalize(accepted)
    [math_file] = discover_configs(corr_dir)["math"]["train"]
    assert math_file not in hub.files(f"{NS}/lema-corrections")
    assert math_file in hub.files(f"{NS}/lema-corrections", revision="v2")
    card_v2 = hub.files(f"{NS}/lema-corrections", revision="v2")["README.md"].decode()
    assert "`math`" in card_v2 and "level 3" not in card_v2.split("---")[1]


def test_push_retries_transient_errors(tmp_path, hub):
    folder = tmp_path / "lema-mistakes"
    build_mistakes(folder, n_problems=2)
    hub.state.fail_next = [503]
    out = run_client(hub, tmp_path, [{"do": "push", "folder": str(folder), "repo_id": f"{NS}/lema-mistakes"}])
    assert len(hub.commits(f"{NS}/lema-mistakes")) == 2  # initial + exactly one data commit
    assert out["urls"][0].endswith(hub.commits(f"{NS}/lema-mistakes")[0].oid)
    # `lema-hub push FOLDER REPO_ID` pushes any folder (here to a new repo, on a new branch).
    run_client(
        hub, tmp_path, [{"do": "cli", "argv": ["push", str(folder), f"{NS}/copy", "--revision", "dev"]}]
    )
    assert "README.md" in hub.files(f"{NS}/copy", revision="dev")
    assert (
        hub.commits(f"{NS}/copy", revision="dev")[0].message == "collect: upload configs gsm8k-samples, gsm8k"
    )


def test_model_folder_round_trip_is_byte_identical(tmp_path, hub, tiny_model):
    from lema_hub.cards.model import write_eval_results, write_model_card
    from lema_hub.models import resolve_model

    model_dir = tmp_path / "lema-tiny-gsm8k"
    shutil.copytree(resolve_model(tiny_model), model_dir)
    write_model_card(
        model_dir,
        {
            "model_name": f"{NS}/lema-tiny-gsm8k",
            "base_model": None,
            "base_model_name": tiny_model,
            "task": "gsm8k",
            "adapter": False,
        },
    )
    write_eval_results(model_dir, [{"dataset_id": "openai/gsm8k", "task_id": "gsm8k", "value": 1.5}])
    (model_dir / ".cache").mkdir()
    (model_dir / ".cache" / "requests.jsonl").write_text("{}\n")  # local cache: never pushed
    out = run_client(
        hub,
        tmp_path,
        [
            {
                "do": "push",
                "folder": str(model_dir),
                "repo_id": f"{NS}/lema-tiny-gsm8k",
                "repo_type": "model",
                "private": True,
            },
            {"do": "snapshot", "repo_id": f"{NS}/lema-tiny-gsm8k", "local_dir": str(tmp_path / "fetched")},
        ],
    )
    fetched = Path(out["snapshot"])
    assert hub.state.repos[("model", f"{NS}/lema-tiny-gsm8k")].private
    want = {
        p.relative_to(model_dir).as_posix(): p.read_bytes()
        for p in model_dir.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    }
    got = {
        p.relative_to(fetched).as_posix(): p.read_bytes()
        for p in fetched.rglob("*")
        if p.is_file() and ".cache" not in p.parts and p.name != ".gitattributes"
    }
    assert got == want
    assert "model.safetensors" in got and ".eval_results/gsm8k.yaml" in got


def test_load_artifact_reads_each_folder_even_when_names_collide(tmp_path):
    """`datasets.load_dataset(folder)` caches by folder name; load_artifact must not."""
    a, b = tmp_path / "a" / "mistakes", tmp_path / "b" / "mistakes"
    from lema_hub.artifacts import load_artifact, save_dataset_config

    save_dataset_config(a, "sample", {"train": [{"problem_id": "x/1", "n": 1}]})
    save_dataset_config(
        b, "sample", {"train": [{"problem_id": "y/1", "n": 2}, {"problem_id": "y/2", "n": 3}]}
    )
    assert load_artifact(str(a), "sample")["problem_id"] == ["x/1"]
    assert load_artifact(str(b), "sample")["problem_id"] == ["y/1", "y/2"]


# ------------------------------------------------------------------------------------------------
# What users type on a local folder; interrupted writes; file modes
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def own_datasets_cache(tmp_path, monkeypatch):
    """A fresh `datasets` cache, so these tests see exactly the collisions they create."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_plain_load_dataset_returns_the_rows_on_disk_after_a_rewrite(tmp_path, own_datasets_cache):
    folder = tmp_path / "lema-mistakes"
    save_dataset_config(
        folder, "sample", {"train": [{"problem_id": "a/1", "n": 1}, {"problem_id": "a/2", "n": 2}]}
    )
    assert datasets.load_dataset(str(folder), "sample", split="train")["n"] == [1, 2]
    save_dataset_config(folder, "sample", {"train": [{"problem_id": "b/1", "n": 7}]})
    assert datasets.load_dataset(str(folder), "sample", split="train")["n"] == [7]
    # The same rows again: the same file name (no churn in the YAML), the same rows read.
    before = discover_configs(folder)
    save_dataset_config(folder, "sample", {"train": [{"problem_id": "b/1", "n": 7}]})
    assert discover_configs(folder) == before
    assert datasets.load_dataset(str(folder), "sample", split="train")["n"] == [7]


def test_plain_load_dataset_keeps_same_named_folders_apart(tmp_path, own_datasets_cache):
    a, b = tmp_path / "run-a" / "lema-mistakes", tmp_path / "run-b" / "lema-mistakes"
    save_dataset_config(a, "sample", {"train": [{"problem_id": "x/1", "n": 1}]})
    save_dataset_config(
        b, "sample", {"train": [{"problem_id": "y/1", "n": 2}, {"problem_id": "y/2", "n": 3}]}
    )
    assert datasets.load_dataset(str(a), "sample", split="train")["problem_id"] == ["x/1"]
    assert datasets.load_dataset(str(b), "sample", split="train")["problem_id"] == ["y/1", "y/2"]
    assert datasets.load_dataset(str(a), "sample", split="train")["problem_id"] == ["x/1"]


def _leftovers(folder: Path, dead_pid: int) -> None:
    """What a kill inside the folder swap leaves: hidden staging and old-rows folders (both namings)."""
    for name in (
        ".gsm8k.k3j9x_0a",  # older versions: `.<config>.<rand>/` (staging)
        f".gsm8k.old-{dead_pid}",  # older versions: `.<config>.old-<pid>/` (rows being replaced)
        f".lema-staging-{dead_pid}-gsm8k.ab12cd34",
    ):
        shutil.copytree(folder / "data" / "gsm8k", folder / name)


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_leftovers_of_an_interrupted_swap_are_never_pushed(tmp_path, hub):
    folder = tmp_path / "lema-mistakes"
    build_mistakes(folder)
    _leftovers(folder, _dead_pid())
    # A write killed before its README.md commit: new files beside the listed ones, a new config.
    shard = next((folder / "data" / "gsm8k-samples").glob("*.parquet"))
    shutil.copy(shard, folder / "data" / "gsm8k" / "train-00000-of-00001-0123456789abcdef.parquet")
    shutil.copytree(folder / "data" / "gsm8k", folder / "data" / "gsm8k-unlisted")
    run_client(hub, tmp_path, [{"do": "push", "folder": str(folder), "repo_id": f"{NS}/lema-mistakes"}])
    remote = set(hub.files(f"{NS}/lema-mistakes"))
    assert not [p for p in remote if p.startswith(".") and p != ".gitattributes"], sorted(remote)
    assert {p for p in remote if p.startswith("data/")} == {
        f for splits in discover_configs(folder).values() for files in splits.values() for f in files
    }


def test_next_write_cleans_leftovers_and_restores_a_config_caught_mid_swap(tmp_path):
    folder = tmp_path / "lema-mistakes"
    build_mistakes(folder)
    dead = _dead_pid()
    _leftovers(folder, dead)
    # Killed between moving gsm8k's rows aside and moving the new ones in: its folder is missing.
    os.replace(folder / "data" / "gsm8k", folder / f".lema-old-{dead}-gsm8k")
    rows_before = sorted(f.read_bytes() for f in (folder / f".lema-old-{dead}-gsm8k").iterdir())
    # A live writer's staging folder is not touched.
    live = folder / f".lema-staging-{os.getppid()}-gsm8k-samples.zz99yy88"
    live.mkdir()
    save_dataset_config(folder, "other", {"train": [{"n": 1}]})
    hidden = sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.is_dir())
    assert hidden == [live.name]
    assert sorted(f.read_bytes() for f in (folder / "data" / "gsm8k").iterdir()) == rows_before
    assert {c["config_name"] for c in _front_matter(folder)["configs"]} == {"gsm8k", "gsm8k-samples", "other"}


def test_artifact_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        folder = tmp_path / "lema-mistakes"
        build_mistakes(folder)
    finally:
        os.umask(old)
    modes = {p.relative_to(folder).as_posix(): p.stat().st_mode & 0o777 for p in folder.rglob("*")}
    files = {p: m for p, m in modes.items() if (folder / p).is_file()}
    dirs = {p: m for p, m in modes.items() if (folder / p).is_dir()}
    assert {"README.md", "run_summary.json", "lema_hub_config.yaml"} <= set(files)
    assert any(p.startswith("data/gsm8k/") for p in files) and "data/gsm8k" in dirs
    assert set(files.values()) == {0o644}, files
    assert set(dirs.values()) == {0o755}, dirs


def test_a_rewritten_config_replaces_its_remote_files_in_one_push(tmp_path, hub):
    folder = tmp_path / "lema-mistakes"
    samples = build_mistakes(folder)
    repo = f"{NS}/lema-mistakes"
    run_client(hub, tmp_path, [{"do": "push", "folder": str(folder), "repo_id": repo}])
    # A rerun wrote fewer rows into gsm8k-samples: new content, new file names.
    save_dataset_config(folder, "gsm8k-samples", {"train": samples[:2]})
    write_dataset_card(folder, "mistakes")
    out = run_client(
        hub,
        tmp_path,
        [
            {"do": "push", "folder": str(folder), "repo_id": repo},
            {"do": "load", "repo_id": repo, "config": "gsm8k-samples"},
        ],
    )
    remote_data = {p for p in hub.files(repo) if p.startswith("data/")}
    local_data = {
        f for splits in discover_configs(folder).values() for files in splits.values() for f in files
    }
    assert remote_data == local_data  # the first push's gsm8k-samples files are gone
    assert _normalize(out["loaded"]["gsm8k-samples@None"]) == _normalize(samples[:2])


def test_model_folders_built_atomically_honour_the_umask(tmp_path):
    from lema_hub.models import _publish_atomically

    def build(tmp: Path) -> None:
        (tmp / "tokenizer_config.json").write_text("{}")

    old = os.umask(0o022)
    try:
        target = _publish_atomically(build, tmp_path / "tokenizers" / "tiny")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o755
    assert (target / "tokenizer_config.json").stat().st_mode & 0o777 == 0o644


def test_hub_shim_still_imports_the_moved_names():
    """`lema_hub.hub` is a deprecation shim: every name it lists is the moved module's object."""
    import lema_hub.artifacts
    import lema_hub.cards.dataset
    import lema_hub.cards.model
    import lema_hub.cards.sweep
    import lema_hub.filemodes
    import lema_hub.push
    import lema_hub.schema
    from lema_hub import hub

    homes = [
        lema_hub.artifacts,
        lema_hub.filemodes,
        lema_hub.push,
        lema_hub.cards.dataset,
        lema_hub.cards.model,
        lema_hub.cards.sweep,
        lema_hub.schema,
    ]
    for name in hub.__all__:
        owners = [m for m in homes if getattr(m, name, None) is getattr(hub, name)]
        assert owners, name
    assert hub.push_folder is lema_hub.push.push_folder
    assert hub.save_dataset_config is lema_hub.artifacts.save_dataset_config
    assert hub.write_model_card is lema_hub.cards.model.write_model_card
