"""LeMa demo Space: Solve / Correct / Browse.

Runs as a Hugging Face Space (the pushed folder holds the `lema_hub` package beside this file)
or from a checkout (`python spaces/demo/app.py`). Options come from `LEMA_DEMO_<FIELD>`
environment variables (Space variables), e.g. LEMA_DEMO_LEMA_MODEL, LEMA_DEMO_BASELINE_MODEL,
LEMA_DEMO_CORRECTIONS, LEMA_DEMO_MISTAKES, LEMA_DEMO_BACKEND, LEMA_DEMO_BASE_URLS.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for root in (HERE, *HERE.parents[:2]):
    if (root / "lema_hub" / "demo" / "__init__.py").is_file():
        sys.path.insert(0, str(root))
        break

from lema_hub.demo import DemoConfig, build_demo, launch  # noqa: E402
from lema_hub.schema import EMBEDDED_MODEL, EMBEDDED_MODEL_HUB_ID  # noqa: E402

ON_SPACE = bool(os.environ.get("SPACE_ID"))
cfg = DemoConfig(
    # A Space serves on 0.0.0.0:7860; there the Hub is reachable, so the fallback is the Hub copy
    # of the embedded model (no GGUF package needed).
    host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if ON_SPACE else "127.0.0.1"),
    port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    fallback_model=EMBEDDED_MODEL_HUB_ID if ON_SPACE else EMBEDDED_MODEL,
)
demo = build_demo(cfg)

if __name__ == "__main__":
    launch(cfg, demo=demo)
