"""LeMa text formats: exact strings, GSM8K/MATH gold conversion, step splitting, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lema_hub.formats import (
    CORRECTION_INSTRUCTION,
    as_messages,
    correction_prompt,
    correction_target,
    corrector_query,
    cot_prompt,
    cot_target,
    gold_steps,
    gsm8k_rationale,
    last_boxed,
    math_rationale,
    parse_rendered_steps,
    render_steps,
    split_steps,
    steps_with_answer,
    to_prompt_completion,
)
from lema_hub.problems import Problem


def test_cot_prompt_is_the_papers_exact_string():
    assert cot_prompt("What is 2 + 3?") == (
        "Please solve the following math problem.\nQuestion: What is 2 + 3?\nAnswer: Let's think step by step.\n"
    )
    # The paper's evaluation file collapses runs of spaces in questions.
    assert cot_prompt("  A robe takes 2 bolts.  How many?  ") == cot_prompt("A robe takes 2 bolts. How many?")


def test_cot_target():
    assert cot_target("So 2 + 3 = 5.", "5") == "So 2 + 3 = 5. The answer is 5."
    assert cot_target("So 2 + 3 = 5.", "5.") == "So 2 + 3 = 5. The answer is 5."
    assert cot_target("", "7") == "The answer is 7."


@pytest.mark.parametrize(
    "solution, rationale, answer",
    [
        # annotations removed, operators spaced, a period added, lines joined by spaces
        (
            "It takes 2/2=<<2/2=1>>1 bolt\nSo 2+1=<<2+1=3>>3 bolts\n#### 3",
            "It takes 2 / 2 = 1 bolt. So 2 + 1 = 3 bolts.",
            "3",
        ),
        # an operator already after a space is kept as written; '=' is always spaced
        ("She has 45 -40 =<<45-40=5>>5 hours.\n#### 5", "She has 45 -40 = 5 hours.", "5"),
        ("He paid $12 x 5 =$<<12*5=60>>60.\n#### 60", "He paid $12 x 5 = $60.", "60"),
        # hyphens glued to words are spaced too (the paper's file does it), thousands commas leave the answer
        ("A hip-hop class costs 1,500+500=<<1500+500=2000>>2,000 dollars\n#### 2,000", None, "2000"),
        # a tab before '=' is swallowed; a question mark ends a line without an added period
        ("Is it 20 + 10\t= <<20+10=30>>30?\n#### 30", "Is it 20 + 10 = 30?", "30"),
        ("Then (-3)+1=<<-3+1=-2>>-2\n#### -2", "Then ( - 3) + 1 = -2.", "-2"),
    ],
)
def test_gsm8k_rationale(solution, rationale, answer):
    got_rationale, got_answer = gsm8k_rationale(solution)
    assert got_answer == answer
    if rationale is not None:
        assert got_rationale == rationale
    assert "<<" not in got_rationale and "####" not in got_rationale


def test_gsm8k_rationale_hyphen_and_commas():
    r, a = gsm8k_rationale("A hip-hop class costs 1,500+500=<<1500+500=2000>>2,000 dollars\n#### 2,000")
    assert r == "A hip - hop class costs 1,500 + 500 = 2,000 dollars."
    assert a == "2000"


def test_gsm8k_rationale_rejects_non_gsm8k():
    with pytest.raises(ValueError, match="####"):
        gsm8k_rationale("no final answer line")
    with pytest.raises(ValueError, match="empty"):
        gsm8k_rationale("2+2=4\n####   ")


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{5}$.", "5"),
        (r"first \boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not count for nesting
        (r"\fbox{7}", "7"),
        (r"the answer is $\boxed 2$", "2"),
        (r"\boxed{3} and a broken \boxed{4", "3"),  # unbalanced last box -> the earlier one
        ("no box here", None),
        (None, None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_math_rationale():
    r, a = math_rationale("We have $x=2$.\n\nSo $x^2 = \\boxed{4}$.")
    assert a == "4"
    assert r == "We have $x=2$. So $x^2 = \\boxed{4}$."
    assert cot_target(r, a).endswith("The answer is 4.")
    with pytest.raises(ValueError, match="boxed"):
        math_rationale("no answer")


def _problem(solution: str, answer: str, source: str) -> Problem:
    return Problem(f"{source}/train/0", source, "train", "Q?", solution, answer)


def test_gold_steps():
    p = _problem("She buys 3*2=<<3*2=6>>6 eggs\nShe eats 1, so 6-1=<<6-1=5>>5 are left\n#### 5", "5", "gsm8k")
    assert gold_steps(p) == [
        "She buys 3 * 2 = 6 eggs.",
        "She eats 1, so 6 - 1 = 5 are left.",
        "The answer is 5.",
    ]
    m = _problem("Note $2+2=4$. Then $4 \\cdot 2 = \\boxed{8}$.", "8", "math")
    steps = gold_steps(m)
    assert steps[-1] == "The answer is 8."
    assert steps[:-1] == ["Note $2+2=4$.", "Then $4 \\cdot 2 = \\boxed{8}$."]


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Step 1: Add 2 and 3 to get 5.\nStep 2: The answer is 5.",
            ["Add 2 and 3 to get 5.", "The answer is 5."],
        ),
        (
            "**Step 1:** Add $1.5 + 2$.\n\n**Step 2:** Multiply.\nIt is 7.\n**Step 3:** The answer is 7.",
            ["Add $1.5 + 2$.", "Multiply. It is 7.", "The answer is 7."],
        ),
        (
            "1. First, x = 2.\n2. Then y = 3.\n\nSo the answer is 5.",
            ["First, x = 2.", "Then y = 3.", "So the answer is 5."],
        ),
        (
            "## Solution\n- Mr. Lee has 3.5 kg.\n- He buys 2 more, so 5.5 kg. The answer is 5.5.",
            ["Solution", "Mr. Lee has 3.5 kg.", "He buys 2 more, so 5.5 kg.", "The answer is 5.5."],
        ),
        (
            "Janet has 3 apples. She buys 2 more, so 3 + 2 = 5. The answer is 5.",
            ["Janet has 3 apples.", "She buys 2 more, so 3 + 2 = 5.", "The answer is 5."],
        ),
        # periods inside $...$ do not split
        (
            "We get $x = 1. Y$ here. So it is 2. The answer is 2.",
            ["We get $x = 1. Y$ here.", "So it is 2.", "The answer is 2."],
        ),
        # several lines: one step per line (not split further); a multi-line display stays one step
        (
            "We get $x = 1$. Then\n$$\na = 2\n$$\nThe answer is 2.",
            ["We get $x = 1$. Then", "$$ a = 2 $$", "The answer is 2."],
        ),
        ("", []),
        ("   \n  ", []),
        (None, []),
    ],
)
def test_split_steps(text, expected):
    assert split_steps(text) == expected


def test_render_steps():
    assert (
        render_steps(["a.", "b.", "The answer is 3."]) == "Step 1: a.\nStep 2: b.\nStep 3: The answer is 3."
    )


_step_text = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters=" +-*/=$,."),
    min_size=1,
    max_size=40,
).map(lambda s: " ".join(s.split()))


@settings(max_examples=60, deadline=None)
# A step says something (a letter or digit) and is not markdown, which split_steps removes.
@given(
    st.lists(
        _step_text.filter(
            lambda s: (
                any(c.isalnum() for c in s)
                and "step" not in s.lower()
                and not s.startswith("*")  # a leading "*" is a markdown bullet, "**" bold: both are dropped
                and "**" not in s
            )
        ),
        min_size=1,
        max_size=8,
    )
)
def test_render_then_split_round_trips(steps):
    steps = [s for s in steps if s]
    if not steps:
        return
    assert split_steps(render_steps(steps)) == steps
    assert [t for _, t in parse_rendered_steps(render_steps(steps))] == steps


def test_steps_with_answer_replaces_a_stated_answer():
    assert steps_with_answer(["a.", "The answer is 4."], "5") == ["a.", "The answer is 5."]
    assert steps_with_answer(["a."], "5") == ["a.", "The answer is 5."]


def test_correction_prompt_layout():
    p = correction_prompt("What is 2 + 2?", ["2 + 2 = 5.", "The answer is 5."])
    assert p == (
        CORRECTION_INSTRUCTION + "\nQuestion: What is 2 + 2?\nOriginal Solution:\n{\n"
        "Step 1: 2 + 2 = 5.\nStep 2: The answer is 5.\n}\nIncorrect Step:"
    )
    assert CORRECTION_INSTRUCTION.startswith(
        "For the following math word problem, the original solution is incorrect."
    )
    assert corrector_query("Q?", ["x."]).endswith("}\nIncorrect Step:")
    with pytest.raises(ValueError):
        corrector_query("Q?", [])


def test_correction_target_layout_and_round_trip():
    t = correction_target(2, "3 * 4 is 12, not 10.", ["3 * 4 = 12.", "12 + 1 = 13.", "The answer is 13."])
    assert t == (
        " Step 2.\nExplanation: 3 * 4 is 12, not 10.\nCorrect Solution:\n{\n...\n"
        "Step 2: 3 * 4 = 12.\nStep 3: 12 + 1 = 13.\nStep 4: The answer is 13.\n}"
    )
    # the prompt + target read back as the corrected steps with their numbers
    assert parse_rendered_steps(t.split("Correct Solution:", 1)[1]) == [
        (2, "3 * 4 = 12."),
        (3, "12 + 1 = 13."),
        (4, "The answer is 13."),
    ]
    first = correction_target(1, "wrong start", ["2 + 2 = 4.", "The answer is 4."])
    assert "..." not in first and first.startswith(" Step 1.\n")
    with pytest.raises(ValueError):
        correction_target(0, "x", ["a"])
    with pytest.raises(ValueError):
        correction_target(2, "x", [])


def test_plain_and_chat_rows():
    plain = to_prompt_completion("P\n", " Step 2.\nE", "plain")
    assert plain == {"prompt": "P\n", "completion": " Step 2.\nE"}
    chat = to_prompt_completion("P\n", " Step 2.\nE", "chat")
    assert chat == {
        "prompt": [{"role": "user", "content": "P"}],
        "completion": [{"role": "assistant", "content": "Step 2.\nE"}],
    }
    assert to_prompt_completion("P", None, "chat")["completion"] is None
    assert as_messages("hi") == [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="prompt style"):
        to_prompt_completion("P", "C", "markdown")  # type: ignore[arg-type]


def test_floor_division_and_power_stay_one_operator():
    from lema_hub.formats import gsm8k_line

    assert gsm8k_line("He fills 250//12 = <<250//12=20>>20 boxes") == "He fills 250 // 12 = 20 boxes."
    assert gsm8k_line("The area is 3**2 = <<3**2=9>>9") == "The area is 3 ** 2 = 9."


def _formats_lines(fn, *args) -> int:
    """Python lines executed in lema_hub/formats.py while ``fn`` runs: an operation count, not a timer."""
    import sys

    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if not frame.f_code.co_filename.endswith("formats.py"):
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "\\boxed{" * n,  # every box unclosed: each used to rescan to the end of the text
        lambda n: "\\boxed{1} " + "\\fbox{" * n,
    ],
)
def test_last_boxed_is_linear(make):
    small, large = 250, 1000
    a, b = _formats_lines(last_boxed, make(small)), _formats_lines(last_boxed, make(large))
    assert b <= 6 * a, (a, b)  # 4x the input: linear ~4x, quadratic ~16x
