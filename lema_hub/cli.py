"""`lema-hub <stage>`: one subcommand per recipe, parsing the same dataclass configs.

Stage modules are imported lazily so `lema-hub --help` stays fast (no torch import).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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
        "lema_hub.mistakes",
        ("CollectConfig",),
        "collect",
        "Sample CoT paths from one or more generators, grade them, keep the wrong ones.",
        "recipes/collect_mistakes.py",
    ),
    "correct": Stage(
        "lema_hub.correction",
        ("CorrectConfig",),
        "correct",
        "Ask a corrector (LLM or rule-based reference) to fix each mistake; keep corrections that reach gold.",
        "recipes/correct.py",
    ),
    "bench-corrector": Stage("lema_hub.corrector_bench", ("BenchCorrectorConfig",), "bench_corrector", "Measure a corrector's first-error location on step-labelled solutions (ProcessBench).", "recipes/bench_corrector.py"),  # fmt: skip
    "evolve": Stage(
        "lema_hub.evolution",
        ("EvolveConfig",),
        "evolve",
        "Correction-centric evolution: new questions from correction seeds, labelled by majority vote.",
        "recipes/evolve.py",
    ),
    "build": Stage(
        "lema_hub.mixture",
        ("BuildConfig",),
        "build",
        "Build CoT + correction training rows and the ablation views.",
        "recipes/build_mixture.py",
    ),
    "sft": Stage(
        "lema_hub.training",
        ("SFTScriptArguments", "trl:SFTConfig", "trl:ModelConfig"),
        "train",
        "Fine-tune with TRL's SFTTrainer (LoRA / QLoRA / full) on a mixture view.",
        "recipes/sft.py",
    ),
    "evaluate": Stage(
        "lema_hub.evaluation",
        ("EvalConfig",),
        "evaluate",
        "Zero-shot greedy pass@1 on GSM8K / MATH / MATH-500 / the bundled sample.",
        "recipes/evaluate.py",
    ),
    "push": Stage(
        "lema_hub.hub",
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
        "usage: lema-hub <stage> [--config FILE.yaml] [--key value ...]",
        "",
        "Learning From Mistakes (LeMa) as Hugging Face Hub artifacts.",
        "",
        "stages:",
    ]
    lines += [f"  {name:<{width}}  {stage.help}" for name, stage in STAGES.items()]
    lines += ["", "Run `lema-hub <stage> --help` for a stage's options."]
    return "\n".join(lines)


def _positional_push_args(args: list[str]) -> list[str]:
    """`lema-hub push FOLDER REPO_ID [...]` → `--folder FOLDER --repo_id REPO_ID [...]`."""
    names = ["--folder", "--repo_id"]
    out: list[str] = []
    rest = list(args)
    while rest and names and not rest[0].startswith("-"):
        out += [names.pop(0), rest.pop(0)]
    return out + rest


def run_stage(name: str, args: Sequence[str] | None = None) -> Any:
    """Parse `args` (default: sys.argv[1:]) for stage `name` and run it."""
    from lema_hub.configs import ConfigError, parse_config

    stage = STAGES[name]
    args = list(sys.argv[1:] if args is None else args)
    if name == "push":
        args = _positional_push_args(args)
    try:
        config_types, run = stage.load()
    except ModuleNotFoundError as exc:
        if exc.name != stage.module:  # a missing dependency inside the stage: show the real error
            raise
        raise SystemExit(f"lema-hub {name}: not built yet ({exc}).") from None
    try:
        configs = parse_config(config_types, args)
    except ConfigError as exc:
        raise SystemExit(f"lema-hub {name}: {exc}") from None
    return run(*configs)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    if argv[0] in ("-V", "--version"):
        from lema_hub import __version__

        print(__version__)
        return
    name, rest = argv[0], argv[1:]
    if name not in STAGES:
        raise SystemExit(f"lema-hub: unknown stage {name!r}.\n\n{_usage()}")
    run_stage(name, rest)


if __name__ == "__main__":
    main()
