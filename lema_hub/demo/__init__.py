"""The LeMa demo: Solve / Correct / Browse, in Gradio.

- **Solve**: the baseline (CoT fine-tuned) and the LeMa model answer a question side by side, as
  numbered steps, streamed; with a known gold answer each final answer is graded (✓ / ✗).
- **Correct**: a question plus a wrong solution → the LeMa model's `Incorrect Step`,
  `Explanation` and `Correct Solution`, the flagged step highlighted in the original.
- **Browse**: the corrections dataset, filterable by task, generator, level and incorrect step.

Models and datasets come from `DemoConfig` (CLI arguments, or `LEMA_DEMO_<FIELD>` environment
variables on a Space). Missing local defaults fall back to the embedded model and the bundled
sample, so `lema-hub demo` always starts. Inference is local (`transformers`) or goes to an
endpoint (`openai`: OpenAI-compatible; `tgi`: `huggingface_hub.InferenceClient`).

Where things live: `config` (DemoConfig), `render` (HTML/CSS), `inference` (models, stop rules),
`data` (examples, datasets, model facts, eval table), `handlers` (DemoApp: what each button does),
`app` (the Gradio page, `launch`), `space` (the Space folder).
"""

from lema_hub.demo.app import build_demo, launch, launch_kwargs
from lema_hub.demo.config import ENV_PREFIX, DemoConfig, config_fields
from lema_hub.demo.data import DemoData, Example, eval_table, model_facts
from lema_hub.demo.handlers import DemoApp
from lema_hub.demo.inference import (
    Generation,
    ModelRunner,
    correction_stop,
    correction_token_budget,
    is_repeating,
    trim_correction,
)
from lema_hub.demo.render import (
    CSS,
    LATEX_DELIMITERS,
    STOP_REASONS,
    render_correction_row,
    render_step_cards,
    render_verdict,
)
from lema_hub.demo.space import (
    SPACE_DIR,
    SPACE_SDK_VERSION,
    prepare_space_folder,
    space_card_info,
    write_space_readme,
)
from lema_hub.formats import corrected_solution

__all__ = [
    "CSS",
    "ENV_PREFIX",
    "LATEX_DELIMITERS",
    "SPACE_DIR",
    "SPACE_SDK_VERSION",
    "STOP_REASONS",
    "DemoApp",
    "DemoConfig",
    "DemoData",
    "Example",
    "Generation",
    "ModelRunner",
    "build_demo",
    "config_fields",
    "corrected_solution",
    "correction_stop",
    "correction_token_budget",
    "eval_table",
    "is_repeating",
    "launch",
    "launch_kwargs",
    "model_facts",
    "prepare_space_folder",
    "render_correction_row",
    "render_step_cards",
    "render_verdict",
    "space_card_info",
    "trim_correction",
    "write_space_readme",
]
