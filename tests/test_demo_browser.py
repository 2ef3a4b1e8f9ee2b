"""The demo in a real browser: Debian's chromium, headless, driven by Playwright (no browser download).

The app's models are served by a real OpenAI-compatible server on 127.0.0.1 with fixed answers,
so the page shows a parsed correction and graded answers (random tiny weights cannot).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_demo import GOLD, endpoint_demo, make_datasets

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory):
    with endpoint_demo(*make_datasets(tmp_path_factory.mktemp("demo-browser-data"))) as (_, url, _srv):
        yield url


@pytest.fixture(scope="module")
def page(app_url: str, chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1360, "height": 1000})
            pg.set_default_timeout(60_000)
            pg.goto(app_url, wait_until="domcontentloaded")
            pg.wait_for_selector("#solve-question textarea")
            yield pg
        finally:
            browser.close()


def pick(page, dropdown_id: str) -> None:
    """Choose the first option of a Gradio dropdown."""
    page.click(f"#{dropdown_id} input")
    page.get_by_role("option").first.click()


def test_solve_example_shows_both_graded_answers(page, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Solve").click()
    page.fill(
        "#solve-question textarea", "Tom buys 3 pens at $2 each and a $5 notebook. How much does he pay?"
    )
    page.fill("#solve-gold textarea", GOLD)
    page.click("#solve-run")
    page.wait_for_selector("#solve-lema .lema-verdict.lema-correct")
    page.wait_for_selector("#solve-baseline .lema-verdict.lema-wrong")
    assert "✓ 11" in page.inner_text("#solve-lema .lema-verdict")
    assert "✗ 12" in page.inner_text("#solve-baseline .lema-verdict")
    assert page.locator("#solve-lema .lema-step").count() == 3
    # \( ... \) renders with KaTeX; GSM8K money stays plain text.
    assert page.locator("#solve-lema .katex").count() >= 1
    assert "$5 notebook" in page.inner_text("#solve-lema")
    page.screenshot(path=str(tmp_path / "solve.png"), full_page=True)

    pick(page, "solve-example")  # the bundled sample fills question and gold
    page.wait_for_function("document.querySelector('#solve-gold textarea').value.length > 0")


def test_correct_example_highlights_the_flagged_step(page, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Correct").click()
    pick(page, "correct-example")
    page.wait_for_function("document.querySelector('#correct-solution textarea').value.startsWith('Step 1:')")
    page.click("#correct-run")
    flagged = page.wait_for_selector("#correct-original .lema-step.lema-flagged")
    assert flagged.query_selector(".lema-num").inner_text() == "1"
    assert "incorrect step" in flagged.inner_text()
    color = flagged.evaluate("el => getComputedStyle(el).borderTopColor")
    assert color == "rgb(220, 38, 38)"  # the CSS reached the page
    assert page.locator("#correct-fix .lema-step.lema-fixed").count() == 3
    assert "3 * 2 is 6, not 7" in page.inner_text("#correct-fix .lema-explain")
    page.wait_for_selector("#correct-baseline .lema-verdict.lema-wrong")
    page.screenshot(path=str(tmp_path / "correct.png"), full_page=True)


def test_browse_tab_renders_a_correction(page, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Browse").click()
    page.wait_for_selector("#browse-view .lema-step.lema-flagged")
    assert page.locator("#browse-table").is_visible()
    page.screenshot(path=str(tmp_path / "browse.png"), full_page=True)
