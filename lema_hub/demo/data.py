"""What the demo shows that is not generated: examples, mistakes, corrections, model facts, eval tables."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lema_hub.artifacts import discover_configs, load_artifact
from lema_hub.demo.config import DemoConfig, _is_local_path, _none
from lema_hub.formats import gold_steps, render_steps
from lema_hub.models import base_model_hub_id, resolve_model
from lema_hub.problems import ProblemArgs, load_problems, load_sample, task_of

logger = logging.getLogger(__name__)


@dataclass
class Example:
    label: str
    question: str
    gold: str | None = None
    task: str = "gsm8k"
    solution: str | None = None  # a wrong solution (Correct tab examples)
    note: str | None = None


def _truncate(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _dataset_configs(path: str) -> list[str]:
    """Config names of a Hub-layout folder (README `configs:`) or a Hub dataset."""
    if Path(path).expanduser().is_dir():
        return list(discover_configs(Path(path).expanduser()))
    from datasets import get_dataset_config_names

    return list(get_dataset_config_names(path))


def _load_rows(path: str | None, want: Callable[[str], bool]) -> tuple[list[tuple[str, dict]], str | None]:
    """Rows (config, row) of the dataset configs that `want` accepts; and a note on failure."""
    path = _none(path)
    if path is None:
        return [], None
    if _is_local_path(path) and not Path(path).expanduser().exists():
        return [], f"{path} not found"
    try:
        rows: list[tuple[str, dict]] = []
        for config in _dataset_configs(path):
            if want(config):
                rows += [(config, dict(r)) for r in load_artifact(path, config=config, split="train")]
        return rows, None
    except Exception as exc:
        logger.warning("could not load %s: %s", path, exc)
        return [], f"could not load {path}: {type(exc).__name__}: {exc}"


def _task_of(row: dict, config: str) -> str:
    """A dataset row's task from its own `source` (and gold answer); the config name only when the
    row has no source."""
    return task_of(row) if row.get("source") else task_of(config)


def _planted_mistake(problem: Any) -> Example | None:
    """A Correct-tab example from a gold solution: its final computation altered (said so on the page)."""
    steps = gold_steps(problem)
    gold = str(problem.gold_answer)
    if len(steps) < 2 or not re.fullmatch(r"-?\d+", gold.replace(",", "")):
        return None
    wrong = str(int(gold.replace(",", "")) + 10)
    k = len(steps) - 1  # the step that produces the answer
    if gold not in steps[k - 1]:
        return None
    steps = steps[: k - 1] + [steps[k - 1].replace(gold, wrong)] + [f"The answer is {wrong}."]
    return Example(
        label=f"[planted] {_truncate(problem.question)}",
        question=problem.question,
        gold=gold,
        task=task_of(problem),
        solution=render_steps(steps),
        note=f"Planted mistake: step {k} of the gold solution was altered (no mistakes dataset configured).",
    )


class DemoData:
    """Everything the tabs show that is not generated: examples, mistakes, corrections."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.notes: list[str] = []
        rows, note = _load_rows(cfg.corrections, lambda c: not c.endswith("-rejected"))
        if note:
            self.notes.append(f"Corrections: {note}.")
        self.corrections = [dict(r, _config=c) for c, r in rows]
        self.solve_examples = self._solve_examples()
        self.correct_examples = self._correct_examples()

    def reference_for(self, question: str, steps: list[str]) -> dict | None:
        """The dataset's accepted correction of exactly this wrong solution, when there is one."""
        want = [s.strip() for s in steps]
        for r in self.corrections:
            if (
                r.get("question", "").strip() == question.strip()
                and [str(s).strip() for s in r.get("steps") or []] == want
            ):
                return r
        return None

    def _solve_examples(self) -> list[Example]:
        out: list[Example] = []
        for entry in self.cfg.examples:
            # "gsm8k" (from the Hub) or "gsm8k=path/to/test.jsonl" (a local file in the original format)
            source, _, path = entry.partition("=")
            try:
                if source == "sample":
                    problems = load_sample("test")[: self.cfg.examples_per_source]
                else:
                    problems = load_problems(
                        ProblemArgs(
                            problems=source,
                            problems_split="test",
                            problems_path=path or None,
                            problems_limit=self.cfg.examples_per_source,
                        )
                    )
            except Exception as exc:
                self.notes.append(f"Examples from {source}: not available ({type(exc).__name__}: {exc}).")
                continue
            out += [
                Example(f"[{source}] {_truncate(p.question)}", p.question, str(p.gold_answer), task_of(p))
                for p in problems
            ]
        return out

    def _correct_examples(self) -> list[Example]:
        rows, note = _load_rows(self.cfg.mistakes, lambda c: not c.endswith("-samples"))
        if note:
            self.notes.append(f"Mistakes: {note}.")
        out = []
        seen: set[str] = set()
        for config, row in rows:
            steps = list(row.get("steps") or [])
            key = row.get("problem_id", "") + "|" + "|".join(steps)
            if not steps or key in seen:
                continue
            seen.add(key)
            out.append(
                Example(
                    label=f"[{config}] {_truncate(row['question'])}",
                    question=row["question"],
                    gold=str(row.get("gold_answer") or "") or None,
                    task=_task_of(row, config),
                    solution=render_steps(steps),
                    note=f"A wrong path by {row.get('generator', 'a generator')} ({row.get('problem_id', '')}).",
                )
            )
            if len(out) >= 50:
                break
        if not out:
            for p in load_sample("test"):
                ex = _planted_mistake(p)
                if ex:
                    out.append(ex)
                if len(out) >= 10:
                    break
        return out

    # Browse -----------------------------------------------------------------------------------
    def facets(self) -> dict[str, list[str]]:
        rows = self.corrections

        def values(key: str) -> list[str]:
            return sorted({str(r.get(key)) for r in rows if r.get(key) is not None}, key=_natural)

        return {
            "task": sorted({r["_config"] for r in rows}),
            "generator": values("generator"),
            "level": values("level"),
            "incorrect_step": values("incorrect_step"),
        }

    def filter(self, task: str, generator: str, level: str, step: str) -> list[dict]:
        def ok(value: Any, wanted: str) -> bool:
            return wanted in (ANY, "", None) or str(value) == wanted

        return [
            r
            for r in self.corrections
            if ok(r["_config"], task)
            and ok(r.get("generator"), generator)
            and ok(r.get("level"), level)
            and ok(r.get("incorrect_step"), step)
        ]


ANY = "any"


def _natural(s: str) -> tuple:
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


def model_facts(name: str) -> dict[str, Any]:
    """What a model is, from the metadata our training wrote: base model, steps, rows, data."""
    facts: dict[str, Any] = {"name": name}
    try:
        facts["base_model"] = base_model_hub_id(name)
        folder = Path(resolve_model(name))
    except Exception:
        return facts
    if not folder.is_dir():
        return facts
    import yaml

    for candidate in (folder, folder.with_name(folder.name.removesuffix("-merged"))):
        summary_path, config_path = candidate / "run_summary.json", candidate / "lema_hub_config.yaml"
        if not summary_path.is_file():
            continue
        sft = json.loads(summary_path.read_text()).get("sft") or {}
        config = (
            (yaml.safe_load(config_path.read_text()) or {}).get("sft", {}) if config_path.is_file() else {}
        )
        state_path = candidate / "trainer_state.json"
        steps = json.loads(state_path.read_text()).get("global_step") if state_path.is_file() else None
        facts.update(
            steps=steps or config.get("max_steps"),
            batch_size=config.get("per_device_train_batch_size"),
            train_rows=(sft.get("metrics") or {}).get("train_samples"),
            datasets=sft.get("datasets"),
            dataset_config=sft.get("dataset_config"),
            adapter=sft.get("adapter"),
        )
        break
    return facts


def eval_table(cfg: DemoConfig) -> str | None:
    """The comparison table an evaluation folder holds (`comparison.md`), or None."""
    folder = _none(cfg.eval_dir)
    path = Path(folder) / "comparison.md" if folder else None
    if path is None or not path.is_file():
        return None
    return path.read_text().strip() or None
