"""Deprecated: the corrector moved to `lema_hub.corrector`, the `correct` stage to `lema_hub.correct`."""

from lema_hub.artifacts import load_rows, main_config
from lema_hub.correct import (
    BACKENDS,
    CorrectConfig,
    check_corrections_arithmetic,
    correct,
    summarize,
)
from lema_hub.corrector.parse import MAX_CORRECTION_CHARS, ParsedCorrection, parse_correction
from lema_hub.corrector.prompt import (
    DEFAULT_PROMPTS,
    PROMPT_STYLES,
    CorrectorPrompt,
    build_corrector_input,
    corrector_prompt,
    split_demonstrations,
)
from lema_hub.corrector.reference import (
    arithmetic_step,
    reference_correction,
    reference_rules_ref,
    reference_step,
)
from lema_hub.schema import REJECT_REASONS

__all__ = [
    "BACKENDS",
    "DEFAULT_PROMPTS",
    "MAX_CORRECTION_CHARS",
    "PROMPT_STYLES",
    "REJECT_REASONS",
    "CorrectConfig",
    "CorrectorPrompt",
    "ParsedCorrection",
    "arithmetic_step",
    "build_corrector_input",
    "check_corrections_arithmetic",
    "correct",
    "corrector_prompt",
    "load_rows",
    "main_config",
    "parse_correction",
    "reference_correction",
    "reference_rules_ref",
    "reference_step",
    "split_demonstrations",
    "summarize",
]
