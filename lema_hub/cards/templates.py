"""Card templates: `dataset_cards/` and `model_cards/` of the checkout, or the wheel's copy."""

from __future__ import annotations

import re
from pathlib import Path


def _template_path(group: str, name: str) -> Path:
    """A card template: the repo checkout's `dataset_cards/`/`model_cards/`, or the wheel's copy."""
    here = Path(__file__).resolve().parents[1]  # the lema_hub package
    for base in (here.parent / group, here / "_templates" / group):
        if (base / name).is_file():
            return base / name
    raise FileNotFoundError(f"Card template {group}/{name} not found next to the lema_hub package.")


_INCLUDE_RE = re.compile(r"^\{# include (\S+) #\}[ \t]*$", re.M)


def _load_template(group: str, name: str) -> str:
    """A template's text with its `{# include _part.md #}` lines replaced by those files (one level)."""
    path = _template_path(group, name)
    text = path.read_text(encoding="utf-8")
    return _INCLUDE_RE.sub(
        lambda m: _template_path(group, m.group(1)).read_text(encoding="utf-8").rstrip("\n"), text
    )
