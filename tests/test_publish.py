"""publish.finish: the redact → run record → card → push ending every stage shares."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import yaml

from lema_hub.artifacts import HubArgs, save_dataset_config
from lema_hub.publish import finish
from tests.test_hub import sample_rows


@dataclass
class _StageConfig(HubArgs):
    output_dir: str = "out"
    api_key: str | None = None


def test_finish_writes_a_redacted_record_then_the_card_and_pushes_only_when_asked(tmp_path):
    folder = tmp_path / "mistakes"
    samples = sample_rows(3, 2)
    save_dataset_config(folder, "gsm8k-samples", {"train": samples})
    save_dataset_config(folder, "gsm8k", {"train": [r for r in samples if r["verdict"] == "wrong"]})
    cfg = _StageConfig(output_dir=str(folder), api_key="not-a-real-key-123456")
    summary = {"samples": len(samples)}

    assert finish(folder, "mistakes", cfg, summary, recipe="collect") is None

    record = yaml.safe_load((folder / "lema_hub_config.yaml").read_text())["collect"]
    assert record["api_key"] == "<redacted>"
    assert "not-a-real-key" not in (folder / "lema_hub_config.yaml").read_text()
    assert json.loads((folder / "run_summary.json").read_text()) == {"collect": {"samples": 6}}
    card = (folder / "README.md").read_text()
    assert "pretty_name: 'LeMa mistakes" in card or "LeMa mistakes: wrong chain-of-thought paths" in card
    assert "hub_url" not in summary

    # A stage that records another mapping than its config (evaluate) is redacted the same way.
    finish(folder, "mistakes", cfg, {}, recipe="evaluate", record={"hf_token": "hf_" + "x" * 30, "n": 1})
    assert yaml.safe_load((folder / "lema_hub_config.yaml").read_text())["evaluate"] == {
        "hf_token": "<redacted>",
        "n": 1,
    }

    cfg.push_to_hub = True  # no hub_repo_id: the push step says so
    with pytest.raises(ValueError, match="hub_repo_id is missing"):
        finish(folder, "mistakes", cfg, {}, recipe="collect")
    assert finish(folder, "mistakes", cfg, {}, recipe="collect", push=False) is None
