"""CommonsenseQA (CSQA), the paper's third task: its CoT prompt with candidate answers, loaders for
`tau/commonsense_qa` rows and the paper's evaluation file (checked row by row), the matching of a stated
answer to a candidate (`match_candidate`: the paper's rule, the nearest by edit distance, or ours, the
default, with bare labels by position and no match for an answer near no candidate; each kind is
counted), and its correction format (no step index): `Mistakes: ...` / `Corrected Answer: { ... The answer is X. }`.

The stages reach these through `formats.problem_prompt` (CoT prompts), `grading.grade_rows`
(verdicts), `corrector.prompt` / `corrector.parse` (the corrector) and `build` (training rows); a
Problem carries its `candidates` (`problems.load_problems`, `problems: csqa | csqa_sample`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lema_hub.answers import extract_answer
from lema_hub.formats import ANSWER_PREFIX

CSQA_PROMPT = (
    "Please answer the following commonsense question. Please first explain each candidate answer, then "
    "select only one answer that is most relevant to the question and provide reasons.\n"
    "Question: {question}\nCandidate Answers: {candidates}.\nAnswer: Let's think step by step.\n"
)
# Base models go on past their answer with a new example: cut there (plain prompts only).
PLAIN_STOP = ("\nQuestion:", "\n\n" + CSQA_PROMPT.split(" Please first", 1)[0])
_PROMPT_RE = re.compile(
    r"\nQuestion: (?P<question>.*)\nCandidate Answers: (?P<candidates>.*)\.\nAnswer: Let's think step by step\.\n$",
    re.S,
)


@dataclass
class CsqaItem:
    item_id: str
    question: str
    candidates: list[str]
    answer: str  # the gold candidate's text


def csqa_prompt(question: str, candidates: Sequence[str]) -> str:
    """The paper's zero-shot CSQA CoT prompt: the question, then the candidates joined by ", "."""
    return CSQA_PROMPT.format(question=question.strip(), candidates=", ".join(c.strip() for c in candidates))


def prompt_record() -> dict[str, str]:
    """How an evaluation records the CSQA prompt (as `formats.PromptTemplate.record` does for math)."""
    import hashlib

    return {
        "prompt": "csqa-cot",
        "prompt_template": CSQA_PROMPT,
        "prompt_template_sha256": hashlib.sha256(CSQA_PROMPT.encode("utf-8")).hexdigest(),
    }


def parse_csqa_prompt(prompt: str) -> tuple[str, list[str]]:
    """(question, candidates) of a prompt in the paper's format; ValueError when it is not one."""
    m = _PROMPT_RE.search(prompt)
    if not m or not prompt.startswith(CSQA_PROMPT.split("\n", 1)[0]):
        raise ValueError("not a CSQA prompt in the paper's format")
    return m.group("question"), m.group("candidates").split(", ")


def _question(value: Any, i: int, what: str = "question") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"row {i}: {what} is {value!r}; a non-empty string is needed")
    return value


def _candidate_texts(texts: Any, i: int) -> list[str]:
    """Candidate texts of row `i`: at least 2 non-empty strings (duplicates allowed: the paper's dev
    file has 24 rows with a candidate twice)."""
    if not isinstance(texts, (list, tuple)):
        raise ValueError(f"row {i}: candidates are {texts!r}; a list of strings is needed")
    for k, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"row {i}: candidate {k} is {t!r}; candidates must be non-empty strings")
    if len(texts) < 2:
        raise ValueError(f"row {i}: {len(texts)} candidate(s) {list(texts)!r}; at least 2 are needed")
    return list(texts)


def hub_items(rows: Sequence[dict[str, Any]], split: str) -> list[CsqaItem]:
    """`tau/commonsense_qa` rows (`id`, `question`, `choices` {label, text}, `answerKey`) -> items.

    ValueError naming the row (0-based) and the value for anything else: no or an empty question,
    `choices` not {label: [...], text: [...]}, fewer than 2 candidates, an empty or non-string
    candidate, labels and texts of different lengths, an answerKey that is not one of the labels.
    """
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"row {i} is {type(row).__name__}, not an object")
        question = _question(row.get("question"), i)
        choices = row.get("choices")
        if not isinstance(choices, dict) or not isinstance(choices.get("label"), (list, tuple)):
            shape = type(choices).__name__ if not isinstance(choices, dict) else f"keys {sorted(choices)}"
            raise ValueError(
                f"row {i}: choices must be {{label: [A, B, ...], text: [...]}} (the Hub's shape), got {shape}"
            )
        labels, texts = list(choices["label"]), _candidate_texts(choices.get("text"), i)
        if len(labels) != len(texts):
            raise ValueError(f"row {i}: {len(labels)} labels {labels!r} for {len(texts)} candidate texts")
        if "answerKey" not in row:
            raise ValueError(f"row {i}: no answerKey")
        key = row["answerKey"]
        if key not in labels:
            raise ValueError(f"row {i}: answerKey {key!r} is not one of the labels {labels!r}")
        out.append(CsqaItem(str(row.get("id") or f"{split}/{i}"), question, texts, texts[labels.index(key)]))
    return out


def paper_items(rows: Sequence[dict[str, Any]]) -> list[CsqaItem]:
    """The paper's evaluation file (`prompt`, `answer`, `candidates`) -> items.

    ValueError naming the row (0-based) and the value for anything else: a prompt not in the paper's
    format or with an empty question, no `answer`, fewer than 2 candidates, an empty or non-string
    candidate, `candidates` that are not the candidates in the prompt, an answer that is not a candidate.
    """
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"row {i} is {type(row).__name__}, not an object")
        prompt = row.get("prompt")
        if not isinstance(prompt, str):
            raise ValueError(f"row {i}: prompt is {prompt!r}; a string is needed")
        m = _PROMPT_RE.search(prompt)
        if not m or not prompt.startswith(CSQA_PROMPT.split("\n", 1)[0]):
            raise ValueError(f"row {i}: prompt {prompt[:60]!r}... is not a CSQA prompt in the paper's format")
        question = _question(m.group("question"), i, "the prompt's question")
        candidates = _candidate_texts(row.get("candidates"), i)
        in_prompt = m.group("candidates")
        if ", ".join(c.strip() for c in candidates) != in_prompt:
            raise ValueError(
                f"row {i}: candidates {candidates!r} are not the prompt's candidates {in_prompt!r}"
            )
        if "answer" not in row:
            raise ValueError(f"row {i}: no answer (the gold candidate's text)")
        if row["answer"] not in candidates:
            raise ValueError(f"row {i}: the answer {row['answer']!r} is not a candidate")
        out.append(CsqaItem(f"dev/{i}", question, candidates, row["answer"]))
    return out


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _choice_key(text: str) -> str:
    return " ".join(re.sub(r"[\"'`.,;:!?()\[\]{}]", " ", text.lower()).split())


def map_to_candidate(answer: str, candidates: Sequence[str]) -> tuple[str, bool]:
    """(the candidate closest to `answer`, whether a mapping was needed).

    An answer equal to a candidate (case, quotes and punctuation aside) needs none; otherwise the
    candidate with the smallest edit distance wins (ties: the first candidate), as in the paper:
    `match_candidate`'s "paper" rule.
    """
    choice, kind = match_candidate(answer, candidates, "paper")
    return choice, kind != "exact"


# How a stated answer is matched to a candidate (`choice_mapping` of evaluate; recorded in results):
# "lema_hub" (ours, the default) and "paper" (every answer to its nearest candidate by edit distance).
CHOICE_MAPPINGS = ("lema_hub", "paper")
DEFAULT_CHOICE_MAPPING = "lema_hub"
# The kinds of match (the `mapping` column of eval details): the answer is a candidate as written
# (case, quotes, punctuation aside), a bare label (`B`, `(B)`, `option B`: the candidates in order are
# A, B, C, ...), names exactly one candidate inside a longer answer ("a shopping mall"), is within
# MAX_EDIT_RATIO of exactly one nearest candidate (typos, plurals), or matches none of them.
MAPPING_KINDS = ("exact", "label", "contains", "edit_distance", "no_match")
MAX_EDIT_RATIO = 0.4  # edit distance / length of the longer of the two (BENCHMARKS.md, CSQA mapping)
_LABEL_RE = re.compile(
    r"(?:(?:option|choice|candidate|answer)\s*)?[(\[]?\s*([A-Za-z])\s*[)\]]?", re.IGNORECASE
)


def candidate_label(index: int) -> str:
    """The label of the candidate at `index` (0-based): A, B, C, ... (the Hub's labels, in order)."""
    return chr(ord("A") + index)


def _label_index(answer: str, n: int) -> int | None:
    m = _LABEL_RE.fullmatch(answer.strip().rstrip(".:").strip())
    if not m:
        return None
    i = ord(m.group(1).upper()) - ord("A")
    return i if 0 <= i < n else None


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def match_candidate(
    answer: str, candidates: Sequence[str], rule: str = DEFAULT_CHOICE_MAPPING
) -> tuple[str | None, str]:
    """(the candidate `answer` names, or None; how: one of MAPPING_KINDS).

    `rule="paper"`: a candidate as written, else the nearest by edit distance (ties: the first), as
    the paper does: every answer maps to some candidate. `rule="lema_hub"` (ours): a candidate as
    written, else a bare label by position, else the one candidate named inside the answer, else the
    unique nearest candidate when its edit distance is at most MAX_EDIT_RATIO of the longer text;
    anything else (`???`, `I do not know`, `none of the above`, two candidates named, a tie) matches
    no candidate. Duplicated candidate texts count once.
    """
    if rule not in CHOICE_MAPPINGS:
        raise ValueError(f"unknown choice_mapping {rule!r}; expected one of {CHOICE_MAPPINGS}")
    norm = _choice_key(answer)
    keys = [_choice_key(c) for c in candidates]
    for c, k in zip(candidates, keys):
        if k == norm:
            return c, "exact"
    if rule == "paper":
        return min(candidates, key=lambda c: edit_distance(norm, _choice_key(c))), "edit_distance"
    label = _label_index(answer, len(candidates))
    if label is not None:
        return candidates[label], "label"
    distinct = dict(zip(keys, candidates))  # key -> the first candidate written that way
    named = [k for k in distinct if _contains(norm, k)]
    maximal = [k for k in named if not any(o != k and _contains(o, k) for o in named)]
    if len(maximal) == 1:
        return distinct[maximal[0]], "contains"
    if named:
        return None, "no_match"  # several candidates named: no choice was made
    dist = sorted((edit_distance(norm, k), k) for k in distinct)
    best_d, best = dist[0]
    tie = len(dist) > 1 and dist[1][0] == best_d
    if tie or not norm or best_d > MAX_EDIT_RATIO * max(len(norm), len(best)):
        return None, "no_match"
    return distinct[best], "edit_distance"


# ------------------------------------------------------------------------------- correction format
# The paper's CSQA corrector schema (prompt_correction_csqa.txt): the original answer in braces, then
# `Mistakes:` (the explanation) and the corrected answer in braces, ending "The answer is X.".
CANDIDATES_LABEL = "Candidate Answers:"
ORIGINAL_ANSWER_LABEL = "Original Answer:"
MISTAKES_LABEL = "Mistakes:"
CORRECTED_ANSWER_LABEL = "Corrected Answer:"
# Ours: the instruction of a CSQA correction training row (the paper's CSQA training data and its
# instruction were never released); the math rows use the paper's own second instruction.
CORRECTION_INSTRUCTION = (
    "For the following commonsense question, the original answer may contain mistakes. Please point out "
    "the mistakes in the original answer, then give a corrected answer that selects the one candidate "
    "most relevant to the question."
)


def _block(text: str) -> str:
    return "{\n" + text.strip() + "\n}"


def corrector_query(question: str, candidates: Sequence[str], original: str) -> str:
    """The query after the corrector's demonstrations: question, candidates, the original answer in
    braces, ending at `Mistakes:` (the corrector goes on from there)."""
    return f"{original_answer_block(question, candidates, original)}\n{MISTAKES_LABEL}"


def original_answer_block(question: str, candidates: Sequence[str], original: str) -> str:
    """`Question: ...` / `Candidate Answers: a, b, c.` / `Original Answer:` / `{ original }`."""
    cands = ", ".join(c.strip() for c in candidates)
    return (
        f"Question: {question.strip()}\n{CANDIDATES_LABEL} {cands}.\n"
        f"{ORIGINAL_ANSWER_LABEL}\n{_block(original)}"
    )


def correction_prompt(question: str, candidates: Sequence[str], original: str) -> str:
    """A CSQA correction training prompt: our instruction, then the question, candidates and the
    original answer; the completion (`correction_target`) starts at `Mistakes:`."""
    return f"{CORRECTION_INSTRUCTION}\n{original_answer_block(question, candidates, original)}\n"


def correction_target(mistakes: str | None, corrected: str | None) -> str:
    """`Mistakes: ...` / `Corrected Answer:` / `{ corrected answer }`; either part may be left out
    (None) for the ablation views."""
    parts = []
    if mistakes is not None:
        parts.append(f"{MISTAKES_LABEL} {' '.join(mistakes.split())}")
    if corrected is not None:
        parts.append(f"{CORRECTED_ANSWER_LABEL}\n{_block(corrected)}")
    if not parts:
        raise ValueError("correction_target needs the mistakes, the corrected answer, or both")
    return "\n".join(parts)


_ANSWER_STATEMENT = re.compile(re.escape(ANSWER_PREFIX), re.I)


def cot_completion(completion: str, answer: str) -> str | None:
    """A sampled CSQA path as a CoT training target: its text up to its last "The answer is", which
    then names `answer` (the gold candidate, as written in the candidates). None without that statement."""
    ends = [m.start() for m in _ANSWER_STATEMENT.finditer(completion)]
    if not ends:
        return None
    return f"{completion[: ends[-1]].lstrip()}{ANSWER_PREFIX} {answer.strip()}."


# ---------------------------------------------------------------------------------- training data
# Ours: training data is stricter than evaluation. Evaluation maps any stated answer to its nearest
# candidate (the paper's rule); a training row must name the gold candidate as written, so a path or
# correction that reaches gold only through that mapping ("The answer is none of them.") is left out.


def names_candidate(answer: str | None, candidate: str) -> bool:
    """Whether a stated answer is `candidate` as written, under the comparison for which
    `map_to_candidate` needs no mapping (case, quotes and punctuation aside). A letter label ("B")
    or a misspelling is not."""
    key = _choice_key(candidate)
    return isinstance(answer, str) and bool(key) and _choice_key(answer) == key


def states_exactly(text: str | None, gold: str) -> bool:
    """Whether the last "The answer is" of `text` (the answer the grader reads) names the gold
    candidate as written (`names_candidate`)."""
    return bool(text) and names_candidate(extract_answer(text, "gsm8k", "strict"), gold)
