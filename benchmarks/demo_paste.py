"""Time long pastes into the demo's Correct tab in headless chromium (Playwright, Debian's chromium).

    PYTHONPATH=. python benchmarks/demo_paste.py [--chromium /usr/bin/chromium]

Prints seconds from filling the solution box until the page answers again (a key typed and a script
evaluated), for 400 lines, 1,000 lines and 50,000 characters. The box is bounded (`max_length`), so
what lands in it is at most `DemoConfig.max_solution_chars`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tests.test_demo import endpoint_demo, make_datasets
from tests.test_demo_browser import CHROMIUM_ARGS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    line = "Step {i}: 3 * {i} = {v} apples are packed into the crates.\n"
    cases = {
        "400 lines": "".join(line.format(i=i, v=3 * i) for i in range(1, 401)),
        "1,000 lines": "".join(line.format(i=i, v=3 * i) for i in range(1, 1001)),
        "50,000 characters": ("x" * 99 + "\n") * 500,
    }
    with tempfile.TemporaryDirectory() as tmp, endpoint_demo(*make_datasets(Path(tmp))) as (_, url, _srv):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#solve-question textarea")
            page.get_by_role("tab", name="Correct").click()
            page.wait_for_selector("#correct-solution textarea")
            for name, text in cases.items():
                page.fill("#correct-solution textarea", "")
                t0 = time.perf_counter()
                page.fill("#correct-solution textarea", text)
                page.keyboard.type("x")
                kept = page.evaluate("document.querySelector('#correct-solution textarea').value.length")
                print(f"{name:>18}: {time.perf_counter() - t0:6.2f} s ({kept:,} characters kept)")
            browser.close()


if __name__ == "__main__":
    main()
