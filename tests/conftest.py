"""Shared fixtures. Every test runs offline: no Hub, no network beyond 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The suite's `datasets` cache is its own: test folders never land in (or read from) the user's.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="lema-hub-tests-datasets-"))

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = "tiny:smollm2"
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


def shared_data_dir() -> Path | None:
    """`$LEMA_DATA_DIR` or `../shared/data` beside the checkout; None when absent."""
    candidates = [os.environ.get("LEMA_DATA_DIR"), REPO_ROOT.parent / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real data from ../shared/data; the test is skipped cleanly when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent (set LEMA_DATA_DIR to run this test)")
    return path


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """Name of the tiny random-weight model (its folder is built once and cached)."""
    from lema_hub.models import resolve_model

    resolve_model(TINY_MODEL)
    return TINY_MODEL


@pytest.fixture(scope="session")
def embedded_model() -> str:
    from lema_hub.models import resolve_model

    resolve_model(EMBEDDED_MODEL)
    return EMBEDDED_MODEL


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path
