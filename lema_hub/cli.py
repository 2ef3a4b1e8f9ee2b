"""`lema-hub <stage>`: one subcommand per recipe, parsing the same dataclass configs.

Stage modules are imported lazily so `lema-hub --help` stays fast (no torch import).

Bad input (a config key, a missing, empty or corrupt file, an unknown backend, a Hub id while
offline, an output folder that cannot be written) prints ONE line, `lema-hub <stage>: <what>`,
and exits 2: stages raise `lema_hub.errors.UserError`, and `user_error_message` maps the library
errors that mean the same at this boundary (`OSError`s naming a file, Hub offline/not-found
errors). `--debug` (or LEMA_HUB_DEBUG=1) shows the traceback as well. Any other exception is a
bug and keeps its full traceback (exit 1). The recipes/*.py scripts call `run_stage`, so they
behave the same.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lema_hub.configs import parse_config
from lema_hub.errors import UserError


@dataclass(frozen=True)
class Stage:
    module: str
    config_types: tuple[str, ...]  # "Name" (in `module`) or "package.module:Name"
    run: str  # function in `module`, called with the parsed configs in order
    help: str
    recipe: str  # the thin entry script in recipes/

    def load(self) -> tuple[tuple[type, ...], Any]:
        mod = importlib.import_module(self.module)
        types_ = []
        for spec in self.config_types:
            mod_name, _, attr = spec.rpartition(":")
            types_.append(getattr(importlib.import_module(mod_name) if mod_name else mod, attr))
        return tuple(types_), getattr(mod, self.run)


STAGES: dict[str, Stage] = {
    "collect": Stage(
        "lema_hub.collect",
        ("CollectConfig",),
        "collect",
        "Sample CoT paths from one or more generators, grade them, keep the wrong ones.",
        "recipes/collect.py",
    ),
    "correct": Stage(
        "lema_hub.correct",
        ("CorrectConfig",),
        "correct",
        "Ask a corrector (LLM or rule-based reference) to fix each mistake; keep corrections that reach gold.",
        "recipes/correct.py",
    ),
    "bench-corrector": Stage(
        "lema_hub.bench_corrector",
        ("BenchCorrectorConfig",),
        "bench_corrector",
        "Measure a corrector's first-error location on step-labelled solutions (ProcessBench).",
        "recipes/bench_corrector.py",
    ),  # fmt: skip
    "evolve": Stage(
        "lema_hub.evolve",
        ("EvolveConfig",),
        "evolve",
        "Correction-centric evolution: new questions from correction seeds, labelled by majority vote.",
        "recipes/evolve.py",
    ),
    "build": Stage(
        "lema_hub.build",
        ("BuildConfig",),
        "build",
        "Build CoT + correction training rows and the ablation views.",
        "recipes/build.py",
    ),
    "sft": Stage(
        "lema_hub.sft",
        ("SFTScriptArguments", "trl:SFTConfig", "trl:ModelConfig"),
        "train",
        "Fine-tune with TRL's SFTTrainer (LoRA / QLoRA / full) on a mixture view.",
        "recipes/sft.py",
    ),
    "evaluate": Stage(
        "lema_hub.evaluate",
        ("EvalConfig",),
        "evaluate",
        "Zero-shot greedy pass@1 on GSM8K / MATH / MATH-500 / the bundled sample.",
        "recipes/evaluate.py",
    ),
    "push": Stage(
        "lema_hub.push",
        ("PushConfig",),
        "push",
        "Push any artifact folder to the Hub in one commit: lema-hub push <folder> <repo_id>.",
        "recipes/push.py",
    ),
    "demo": Stage(
        "lema_hub.demo",
        ("DemoConfig",),
        "launch",
        "Launch the Gradio demo (Solve / Correct / Browse) locally.",
        "spaces/demo/app.py",
    ),
    "quickstart": Stage(
        "lema_hub.quickstart",
        ("QuickstartConfig",),
        "run_quickstart",
        "The whole LeMa pipeline offline on CPU: collect, correct, build, SFT x2, evaluate, cards.",
        "recipes/quickstart.py",
    ),
}


def _usage() -> str:
    width = max(len(n) for n in STAGES)
    lines = [
        "usage: lema-hub [--debug] <stage> [--config FILE.yaml] [--key value ...]",
        "",
        "Learning From Mistakes (LeMa) as Hugging Face Hub artifacts.",
        "",
        "stages:",
    ]
    lines += [f"  {name:<{width}}  {stage.help}" for name, stage in STAGES.items()]
    lines += [
        "",
        "Run `lema-hub <stage> --help` for a stage's options. Input errors print one line (exit 2);",
        f"--debug (or {DEBUG_ENV}=1) adds the traceback.",
    ]
    return "\n".join(lines)


def _positional_push_args(args: list[str]) -> list[str]:
    """`lema-hub push FOLDER REPO_ID [...]` → `--folder FOLDER --repo_id REPO_ID [...]`."""
    names = ["--folder", "--repo_id"]
    out: list[str] = []
    rest = list(args)
    while rest and names and not rest[0].startswith("-"):
        out += [names.pop(0), rest.pop(0)]
    return out + rest


DEBUG_ENV = "LEMA_HUB_DEBUG"


def debug_enabled() -> bool:
    """Whether LEMA_HUB_DEBUG asks for tracebacks of input errors."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an input error, or None when `exc` looks like a bug."""

    hint = " (--debug for the traceback)"
    if isinstance(exc, UserError) or _caused_by_user_error(exc):  # e.g. quickstart's StageFailed
        text, hint = str(exc), ""
    elif isinstance(exc, OSError) and getattr(exc, "filename", None) is not None:
        target = f"{exc.filename}" + (f" -> {exc.filename2}" if getattr(exc, "filename2", None) else "")
        text = f"{exc.strerror or type(exc).__name__}: {target}"
    elif isinstance(exc, FileNotFoundError | ConnectionError):  # datasets' "Couldn't find/reach ..."
        text = str(exc) or type(exc).__name__
    elif _is_hub_lookup_error(exc):
        text = f"{type(exc).__name__}: {exc}"
    else:
        return None
    return " ".join(text.split()) + hint


def _caused_by_user_error(exc: BaseException) -> bool:
    """Raised `from` bad input: a UserError, or a Hub look-up error (transformers wraps those)."""

    seen: set[int] = set()
    cause = exc.__cause__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, UserError) or _is_hub_lookup_error(cause):
            return True
        seen.add(id(cause))
        cause = cause.__cause__
    return False


def _is_hub_lookup_error(exc: BaseException) -> bool:
    """Offline mode, or a repo/revision/file that does not exist or is gated: the user's to fix."""
    if "huggingface_hub" not in sys.modules:
        return False
    from huggingface_hub import errors

    kinds = tuple(
        getattr(errors, n)
        for n in (
            "OfflineModeIsEnabled",
            "LocalEntryNotFoundError",
            "RepositoryNotFoundError",
            "RevisionNotFoundError",
            "EntryNotFoundError",
            "GatedRepoError",
        )
        if hasattr(errors, n)
    )
    return isinstance(exc, kinds)


def _has_field(config_types: Sequence[type], name: str) -> bool:
    return any(name in getattr(t, "__dataclass_fields__", {}) for t in config_types)


def run_stage(name: str, args: Sequence[str] | None = None, debug: bool | None = None) -> Any:
    """Parse `args` (default: sys.argv[1:]) for stage `name` and run it.

    An input error prints one line and exits 2 (`--debug`: with its traceback); see the module doc.
    """

    stage = STAGES[name]
    args = list(sys.argv[1:] if args is None else args)
    debug = debug_enabled() if debug is None else debug
    if name == "push":
        args = _positional_push_args(args)
    try:
        config_types, run = stage.load()
    except ModuleNotFoundError as exc:
        if exc.name != stage.module:  # a missing dependency inside the stage: show the real error
            raise
        raise SystemExit(f"lema-hub {name}: not built yet ({exc}).") from None
    if "--debug" in args and not _has_field(config_types, "debug"):  # sft: TrainingArguments.debug
        args.remove("--debug")
        debug = True
    from lema_hub.run_guard import take_partial  # deferred: the CLI imports only the stage it runs

    take_partial()
    try:
        configs = parse_config(config_types, args, prog=f"lema-hub {name}")
        result = run(*configs)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        if debug:
            traceback.print_exc()
        message = message.removeprefix(f"{name}: ")  # "correct: set `mistakes` ..." names it already
        print(f"lema-hub {name}: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    partial = take_partial()
    if partial:  # written, but not finished: a pipeline must not go on as if it were
        failed = sum(o.failed for o in partial)
        print(
            f"lema-hub {name}: exit 1: {failed} request(s) failed; the rows that succeeded are written "
            "and a rerun of the same command asks only the rest.",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    if argv[0] in ("-V", "--version"):
        from lema_hub import __version__

        print(__version__)
        return
    debug = None
    if argv[0] == "--debug":  # `lema-hub --debug <stage> ...` (works for sft too)
        debug, argv = True, argv[1:]
        if not argv:
            print(_usage())
            return
    name, rest = argv[0], argv[1:]
    if name not in STAGES:
        raise SystemExit(f"lema-hub: unknown stage {name!r}.\n\n{_usage()}")
    run_stage(name, rest, debug=debug)


if __name__ == "__main__":
    main()
