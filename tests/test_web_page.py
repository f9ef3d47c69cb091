"""The web page in a real browser (Debian's headless Chromium driven by Playwright)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SAMPLE, unavailable
from playwright.sync_api import expect, sync_playwright
from service_harness import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "report-page.png"

# Every text the status line shows, in order (the page polls once a second).
RECORD_STATUS = """
window.__statuses = [];
new MutationObserver(() => {
  const s = document.getElementById('status');
  if (s && window.__statuses[window.__statuses.length - 1] !== s.textContent)
    window.__statuses.push(s.textContent);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture
def browser_page() -> Any:
    if not Path(CHROMIUM).exists():
        unavailable(f"no chromium at {CHROMIUM}: scripts/install.sh --dev installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.add_init_script(RECORD_STATUS)
        yield page
        browser.close()


def test_upload_progress_and_report_in_a_browser(
    make_server: Callable[..., Server], browser_page: Any, truth: dict[str, Any],
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    page = browser_page
    _upload_in_page(page, make_server().start(), SAMPLE)

    expect(page.locator("#status")).to_have_text("done", timeout=120_000)
    statuses = page.evaluate("window.__statuses")
    assert any(s.startswith(("queued", "analyzing")) for s in statuses), statuses
    captions = page.locator("#captions .caption").all_inner_texts()
    for caption in truth["captions"]:
        assert caption["text"] in captions
    transcript = " ".join(page.locator("#transcript .segment").all_inner_texts())
    assert "my cat" in transcript and "coffee" in transcript
    assert page.locator("#sentiment").inner_text().startswith("positive")
    thumbs = page.locator("#timeline img")
    assert thumbs.count() >= 10
    expect(thumbs.first).to_have_attribute("src", re.compile(r"^blob:"))
    assert "这是我的猫" in page.locator("#timeline").inner_text()
    expect(page.locator("#videos li").first).to_contain_text("sample.mp4 done")  # refreshed
    shot = tmp_path / "report-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    if os.environ.get("REELSCOPE_UPDATE_DOCS") and "sqlite" in request.node.name:
        shutil.copyfile(shot, SCREENSHOT)  # the screenshot kept in docs/


def test_bad_upload_shows_the_error(
    make_server: Callable[..., Server], browser_page: Any, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video at all\n" * 10)
    page = browser_page
    _upload_in_page(page, make_server(workers=0).start(), notes)
    expect(page.locator("#error")).to_have_text(
        "notes.mp4: not a video file (it looks like a text file)"
    )


def _upload_in_page(page: Any, server: Server, clip: Path) -> None:
    """As a person does: open the page, enter a new key, choose the file, upload."""
    page.goto(server.url + "/")
    page.fill("#key", server.create_key("web"))
    page.click("#save-key")
    page.set_input_files("#file", str(clip))
    page.click("#upload")
