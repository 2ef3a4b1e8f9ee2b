"""How every stage ends: redact its config → run record → card → push (`finish`)."""

from __future__ import annotations

import os
from typing import Any

from lema_hub.artifacts import HubArgs, write_run_record
from lema_hub.cards.dataset import write_dataset_card
from lema_hub.cards.model import write_model_card
from lema_hub.configs import config_to_dict, redact
from lema_hub.push import maybe_push

MODEL = "model"  # `finish(kind=MODEL)`: a model folder, carded by `write_model_card(folder, model_info)`


def finish(
    folder: str | os.PathLike,
    kind: str,
    cfg: HubArgs | None,
    summary: dict[str, Any],
    *,
    recipe: str,
    record: dict[str, Any] | None = None,
    card: bool = True,
    push: bool = True,
    prices: dict[str, dict[str, float]] | None = None,
    model_info: dict[str, Any] | None = None,
) -> str | None:
    """Write the run record and card of a finished stage's folder and push it; returns the commit URL.

    `record` is the config to record (default: `cfg` as a dict); credentials are redacted either way.
    `kind` is a dataset card kind (`schema.KINDS`) or MODEL. With `push` and `cfg.push_to_hub`,
    the folder goes to the Hub and `summary["hub_url"]` names the commit (after the record is
    written: the record describes the run, the URL what was done with it).
    """
    write_run_record(
        folder, redact(config_to_dict(cfg) if record is None else record), summary, recipe=recipe
    )
    if card:
        if kind == MODEL:
            write_model_card(folder, model_info or {})
        else:
            write_dataset_card(folder, kind, prices=prices)
    url = maybe_push(folder, cfg, "model" if kind == MODEL else "dataset", recipe) if push and cfg else None
    if url:
        summary["hub_url"] = url
    return url
