"""Deprecated: moved to `lema_hub.artifacts`, `lema_hub.push`, `lema_hub.cards.*` and `lema_hub.schema`."""

from lema_hub.artifacts import (
    HubArgs,
    clean_leftovers,
    discover_configs,
    find_leaks,
    leftover_work_dirs,
    load_artifact,
    load_rows,
    main_config,
    read_run_record,
    sanitize,
    save_dataset_config,
    write_run_record,
)
from lema_hub.cards.dataset import write_dataset_card
from lema_hub.cards.model import (
    add_model_card_datasets,
    write_eval_results,
    write_model_card,
    write_space_card,
)
from lema_hub.cards.sweep import checkpoint_sweep_section, write_checkpoint_sweep
from lema_hub.filemodes import current_umask, honour_umask
from lema_hub.push import PUSH_IGNORE, PushConfig, maybe_push, push, push_folder
from lema_hub.schema import (
    CONFIG_FILE,
    DATA_DIR,
    DEFAULT_NAMESPACE,
    EVAL_RESULTS_DIR,
    IMAGES_DIR,
    KINDS,
    LOCAL_EVAL_FILE,
    README,
    SOURCES,
    SUMMARY_FILE,
    SWEEP_FILE,
)

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR",
    "DEFAULT_NAMESPACE",
    "EVAL_RESULTS_DIR",
    "IMAGES_DIR",
    "KINDS",
    "LOCAL_EVAL_FILE",
    "PUSH_IGNORE",
    "README",
    "SOURCES",
    "SUMMARY_FILE",
    "SWEEP_FILE",
    "HubArgs",
    "PushConfig",
    "add_model_card_datasets",
    "checkpoint_sweep_section",
    "clean_leftovers",
    "current_umask",
    "discover_configs",
    "find_leaks",
    "honour_umask",
    "leftover_work_dirs",
    "load_artifact",
    "load_rows",
    "main_config",
    "maybe_push",
    "push",
    "push_folder",
    "read_run_record",
    "sanitize",
    "save_dataset_config",
    "write_checkpoint_sweep",
    "write_dataset_card",
    "write_eval_results",
    "write_model_card",
    "write_run_record",
    "write_space_card",
]
