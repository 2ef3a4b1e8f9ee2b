"""The demo's Space folder: `prepare_space_folder`, the Space README."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lema_hub.cards.model import write_space_card
from lema_hub.demo.config import DemoConfig
from lema_hub.models import is_hub_id

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lema_hub/, copied whole into the Space
SPACE_DIR = PACKAGE_DIR.parent / "spaces" / "demo"
SPACE_SDK_VERSION = "6.31.0"  # the Gradio version the app is tested with (pinned in the Space card)


def space_card_info(cfg: DemoConfig) -> dict[str, Any]:
    """What the Space README's `SpaceCardData` front matter and body say (models and datasets linked
    when they are Hub ids)."""

    def hub_ids(*names: str | None) -> list[str]:
        return [n for n in names if n and is_hub_id(n)]

    return dict(
        title="LeMa: Learning From Mistakes",
        sdk_version=SPACE_SDK_VERSION,
        app_file="app.py",
        license="apache-2.0",
        short_description="Math solutions corrected step by step, LeMa vs a CoT baseline",
        models=hub_ids(cfg.lema_model, cfg.baseline_model),
        datasets=hub_ids(cfg.corrections, cfg.mistakes),
        body=SPACE_BODY,
    )


SPACE_BODY = """## Configuration

Set Space variables named `LEMA_DEMO_<FIELD>` (any field of `lema_hub.demo.DemoConfig`):

| variable | what |
|---|---|
| `LEMA_DEMO_LEMA_MODEL` | the LeMa model (Hub id or folder) |
| `LEMA_DEMO_BASELINE_MODEL` | the CoT-only baseline shown beside it (`none` hides it) |
| `LEMA_DEMO_CORRECTIONS`, `LEMA_DEMO_MISTAKES` | the corrections (Browse) and mistakes (Correct examples) datasets |
| `LEMA_DEMO_EXAMPLES` | Solve examples, e.g. `sample,gsm8k,math500` |
| `LEMA_DEMO_BACKEND`, `LEMA_DEMO_BASE_URLS` | `openai` or `tgi` to use an endpoint instead of local inference (`tgi` reads the `HF_TOKEN` secret; `openai` the secret named by `LEMA_DEMO_API_KEY_ENV`, default `OPENAI_API_KEY`) |

Without them the Space runs SmolLM2-135M-Instruct on the bundled sample problems."""


def write_space_readme(folder: str | Path, cfg: DemoConfig | None = None) -> Path:
    """Write `README.md` (front matter from `SpaceCardData`) into a Space folder."""
    cfg = cfg or DemoConfig()
    folder = Path(folder)
    write_space_card(folder, space_card_info(cfg))
    return folder / "README.md"


def prepare_space_folder(out_dir: str | Path, cfg: DemoConfig | None = None) -> Path:
    """A folder ready to push as a Space repo: app.py, requirements.txt, README.md and lema_hub/.

    Push it with `lema_hub.push.push_folder(out_dir, repo_id, repo_type="space")`. The Space reads
    its models and datasets from `LEMA_DEMO_*` variables; `cfg` only fills the README's links.
    """
    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(SPACE_DIR / name, out / name)
    license_file = SPACE_DIR.parents[1] / "LICENSE"
    if license_file.is_file():  # the code's license travels with the code
        shutil.copy2(license_file, out / "LICENSE")
    package = PACKAGE_DIR
    target = out / "lema_hub"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    templates = package.parent
    for extra in ("dataset_cards", "model_cards"):  # hub.py renders cards from these
        if (templates / extra).is_dir() and not (target / "_templates" / extra).exists():
            shutil.copytree(templates / extra, target / "_templates" / extra)
    write_space_readme(out, cfg)
    return out
