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
def browser(chromium_path: str):
    """One chromium for the module (Playwright's sync API allows one running instance)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(app_url: str, browser):
    pg = browser.new_page(viewport={"width": 1360, "height": 1000})
    pg.set_default_timeout(60_000)
    pg.goto(app_url, wait_until="domcontentloaded")
    pg.wait_for_selector("#solve-question textarea")
    yield pg
    pg.close()


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
    assert page.locator("#correct-fix .lema-step.lema-fixed:not(.lema-reference *)").count() == 3
    # The example comes from the datasets: their own correction is shown beside LeMa's flag.
    assert "The dataset's correction" in page.inner_text("#correct-fix .lema-reference")
    assert "3 * 2 is 6, not 7" in page.inner_text("#correct-fix .lema-explain")
    page.wait_for_selector("#correct-baseline .lema-verdict.lema-wrong")
    page.screenshot(path=str(tmp_path / "correct.png"), full_page=True)


def test_browse_tab_renders_a_correction(page, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Browse").click()
    page.wait_for_selector("#browse-view .lema-step.lema-flagged")
    assert page.locator("#browse-table").is_visible()
    page.screenshot(path=str(tmp_path / "browse.png"), full_page=True)


# ------------------------------------------------------------------------------------ issue 20: what a visitor sees
CONTRAST_JS = """
(sel) => {
  const el = document.querySelector(sel);
  const parse = (c) => { const m = c.match(/[\\d.]+/g).map(Number); return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1]; };
  // The background the text sits on: blend semi-transparent layers over the first opaque ancestor.
  const layers = [];
  for (let n = el; n; n = n.parentElement) {
    const bg = parse(getComputedStyle(n).backgroundColor);
    if (bg[3] > 0) layers.push(bg);
    if (bg[3] >= 1) break;
  }
  let base = layers.length && layers[layers.length - 1][3] >= 1 ? layers.pop() : (document.documentElement.classList.contains('dark') ? [11, 15, 25, 1] : [255, 255, 255, 1]);
  for (const l of layers.reverse()) base = [0, 1, 2].map(i => l[i] * l[3] + base[i] * (1 - l[3])).concat([1]);
  const lum = (c) => { const v = c.slice(0, 3).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const fg = parse(getComputedStyle(el).color);
  const [a, b] = [lum(fg), lum(base)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}
"""


def _new_page(browser, url: str, **kwargs):
    pg = browser.new_page(**({"viewport": {"width": 1360, "height": 1000}} | kwargs))
    pg.set_default_timeout(60_000)
    pg.goto(url, wait_until="domcontentloaded")
    pg.wait_for_selector("#solve-question textarea")
    return pg


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_verdict_colours_have_enough_contrast(browser, app_url: str, scheme: str) -> None:
    pg = _new_page(browser, app_url + ("?__theme=dark" if scheme == "dark" else ""), color_scheme=scheme)
    try:
        pg.fill(
            "#solve-question textarea", "Tom buys 3 pens at $2 each and a $5 notebook. How much does he pay?"
        )
        pg.fill("#solve-gold textarea", GOLD)
        pg.click("#solve-run")
        pg.wait_for_selector("#solve-lema .lema-verdict.lema-correct")
        pg.wait_for_selector("#solve-baseline .lema-verdict.lema-wrong")
        assert pg.evaluate(
            "document.body.classList.contains('dark') || document.documentElement.classList.contains('dark') || !!document.querySelector('.dark')"
        ) == (scheme == "dark")
        for sel in ("#solve-lema .lema-verdict.lema-correct", "#solve-baseline .lema-verdict.lema-wrong"):
            ratio = pg.evaluate(CONTRAST_JS, sel)
            assert ratio >= 4.5, (scheme, sel, ratio)
    finally:
        pg.close()


def test_phone_width_has_no_horizontal_overflow(browser, app_url: str) -> None:
    pg = _new_page(browser, app_url, viewport={"width": 390, "height": 844})
    try:
        for tab in ("Solve", "Correct", "Browse"):
            pg.get_by_role("tab", name=tab).click()
            pg.wait_for_timeout(300)
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (tab, width)
        pg.get_by_role("tab", name="Solve").click()
        # The two answer panels stack (each full width) instead of two ~170 px columns.
        base = pg.locator("#solve-baseline").bounding_box()
        lema = pg.locator("#solve-lema").bounding_box()
        assert lema["y"] >= base["y"] + base["height"] - 1 and lema["width"] > 300, (base, lema)
    finally:
        pg.close()


def test_long_paste_completes_and_is_bounded(browser, app_url: str) -> None:
    """A 1,000-line paste used to freeze the tab for over a minute; timings are in BENCHMARKS.md."""
    pg = _new_page(browser, app_url)
    try:
        pg.get_by_role("tab", name="Correct").click()
        text = "".join(
            f"Step {i}: 3 * {i} = {3 * i} apples are packed into the crates.\n" for i in range(1, 1001)
        )
        pg.fill("#correct-solution textarea", text)
        pg.keyboard.type("x")
        value = pg.evaluate("document.querySelector('#correct-solution textarea').value.length")
        assert value <= 4000  # bounded in the browser (max_length), the server's limit too
    finally:
        pg.close()


@pytest.fixture(scope="module")
def loop_url(tmp_path_factory: pytest.TempPathFactory):
    """The demo on a streaming endpoint whose correction model loops (one generation at a time)."""
    import threading
    from http.server import ThreadingHTTPServer

    from lema_hub.demo import DemoConfig
    from tests.test_demo import LOOPING_CORRECTION, _CorrectionSSE, free_port, serve

    corrections, mistakes = make_datasets(tmp_path_factory.mktemp("demo-loop-data"))
    _CorrectionSSE.text = LOOPING_CORRECTION
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowSSE)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = DemoConfig(
        backend="openai",
        base_url=f"http://127.0.0.1:{server.server_port}/v1",
        lema_model="lema",
        baseline_model="baseline",
        corrections=str(corrections),
        mistakes=str(mistakes),
        concurrency_limit=1,
        port=free_port(),
    )
    demo, url = serve(cfg)
    try:
        yield url
    finally:
        demo.close()
        server.shutdown()


from tests.test_demo import _CorrectionSSE  # noqa: E402


class _SlowSSE(_CorrectionSSE):
    """A model at ~20 words/s, so a second user has to wait in the queue."""

    def do_POST(self) -> None:
        import time

        orig = self.wfile.write

        def slow(data: bytes) -> int:
            time.sleep(0.05)
            return orig(data)

        self.wfile.write = slow
        super().do_POST()


def test_loop_stops_and_a_queued_user_sees_the_queue(browser, loop_url: str, tmp_path: Path) -> None:
    first, second = _new_page(browser, loop_url), _new_page(browser, loop_url)
    try:
        first.get_by_role("tab", name="Correct").click()
        first.fill(
            "#correct-question textarea",
            "Tom buys 3 pens at $2 each and a $5 notebook. How much does he pay?",
        )
        first.fill(
            "#correct-solution textarea",
            "Step 1: The pens cost 3 * 2 = 7 dollars.\nStep 2: 7 + 5 = 12.\nStep 3: The answer is 12.",
        )
        first.click("#correct-run")
        second.fill("#solve-question textarea", "What is 2 + 2?")
        second.click("#solve-run")
        # The second user waits (one generation at a time) and is told so where the answer will be.
        queued = second.locator("#solve-lema").get_by_text("queue", exact=False)
        queued.first.wait_for(state="visible", timeout=30_000)
        # Really on screen: the topmost element at the text's centre is the text (not clipped away).
        on_top = queued.first.evaluate(
            "el => { const r = el.getBoundingClientRect(); el.scrollIntoView({block: 'center'});"
            " const q = el.getBoundingClientRect(); const hit = document.elementFromPoint(q.x + q.width / 2, q.y + q.height / 2);"
            " return r.height > 0 && !!hit && (el.contains(hit) || hit.contains(el)); }"
        )
        assert on_top
        # The panel has room for it (an empty Markdown panel is zero-height; the placeholder gives it height).
        assert second.locator("#solve-lema").bounding_box()["height"] >= 40
        # The looping correction stops on its own and is drawn as unfinished, with the reason.
        first.wait_for_selector("#correct-fix .lema-unfinished", timeout=120_000)
        assert "repeating itself" in first.inner_text("#correct-fix")
        assert "Unfinished rewrite" in first.inner_text("#correct-fix")
        first.screenshot(path=str(tmp_path / "loop.png"), full_page=True)
    finally:
        first.close()
        second.close()


def test_shift_enter_runs_and_the_answer_scrolls_into_view(browser, app_url: str) -> None:
    pg = _new_page(browser, app_url, viewport={"width": 390, "height": 844})
    try:
        pg.fill(
            "#solve-question textarea", "Tom buys 3 pens at $2 each and a $5 notebook. How much does he pay?"
        )
        assert "Shift+Enter" in pg.inner_text("#solve-question")
        pg.focus("#solve-question textarea")
        pg.keyboard.press("Shift+Enter")
        pg.wait_for_selector("#solve-lema .lema-verdict")
        pg.wait_for_timeout(1500)  # the smooth scroll
        top = pg.evaluate("document.querySelector('#solve-lema').getBoundingClientRect().top")
        assert 0 <= top < 844, top  # the answer is on screen on a phone, not below the inputs
        # Jargon carries a tooltip (the title attribute survives Gradio's HTML sanitizer).
        assert "chain of thought" in pg.get_attribute("#solve-baseline .lema-title", "title")
        assert "known right answer" in pg.inner_text("#solve-gold")
    finally:
        pg.close()


def test_stop_ends_a_running_correction(browser, loop_url: str) -> None:
    pg = _new_page(browser, loop_url)
    try:
        pg.get_by_role("tab", name="Correct").click()
        pg.fill(
            "#correct-question textarea",
            "Tom buys 3 pens at $2 each and a $5 notebook. How much does he pay?",
        )
        pg.fill(
            "#correct-solution textarea",
            "Step 1: The pens cost 3 * 2 = 7 dollars.\nStep 2: The answer is 12.",
        )
        pg.click("#correct-run")
        pg.locator("#correct-fix").get_by_text("generating", exact=False).first.wait_for(timeout=30_000)
        pg.click("#correct-stop")
        pg.locator("#correct-fix").get_by_text("stopped: you pressed Stop").first.wait_for(timeout=10_000)
        pg.wait_for_timeout(3000)  # cancelled: no later update replaces it with a finished rewrite
        assert "Unfinished rewrite" not in pg.inner_text("#correct-fix")
        assert pg.locator("#correct-fix .lema-cursor").count() == 0
    finally:
        pg.close()
