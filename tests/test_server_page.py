"""The page works in a real browser: Debian's chromium, driven by Playwright (never `playwright install`)."""

import contextlib
import os
import shutil

import pytest

from conftest import http
from server_helpers import first_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def _playwright():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; scripts/test.sh tries)")
    return sync_api


@contextlib.contextmanager
def opened_page(server, **page_options):
    """(Playwright's sync API, the page at "/" once it shows the model, the page's script errors so far)."""
    sync_api = _playwright()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(**page_options)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Playwright starts intercepting file choosers when a "filechooser" listener exists, but the
            # switch reaches the browser asynchronously: a key press right after expect_file_chooser()
            # sometimes opened the (headless, invisible) native chooser instead, and the event never came
            # (6 of 8 first presses in a loop). A listener from the start has it on before any key.
            page.on("filechooser", lambda chooser: None)
            page.goto(server.url + "/")
            # expect() polls from Playwright's isolated world: the page's CSP forbids eval, so no wait_for_function.
            sync_api.expect(page.locator("#model-name")).to_contain_text("shapes", timeout=15000)
            yield sync_api, page, errors
        finally:
            browser.close()


def test_upload_an_image_and_see_the_top_label(server, heldout_dir):
    image = first_image(heldout_dir, "triangle")
    expected = http("POST", server.url + "/predict?top_k=1", image.read_bytes(), {"Content-Type": "image/jpeg"})[1]
    with opened_page(server) as (sync_api, page, errors):
        sync_api.expect(page.locator("#details")).to_contain_text("circle, square, triangle")
        page.set_input_files("#file", str(image))
        sync_api.expect(page.locator("#top-label")).to_have_text(expected["predictions"][0]["label"], timeout=15000)
        sync_api.expect(page.locator(".prediction")).to_have_count(3)
        assert page.inner_text("#error") == ""
        assert not errors, errors


def test_the_file_chooser_works_from_the_keyboard_and_errors_leave_nothing_stale(server, heldout_dir, tmp_path):
    """Tab reaches the chooser (with a visible focus ring), Enter and Space open it; after a bad file
    the page shows the error alone: no previous labels, timing or broken preview."""
    image = first_image(heldout_dir, "circle")
    expected = http("POST", server.url + "/predict?top_k=1", image.read_bytes(), {"Content-Type": "image/jpeg"})[1]
    with opened_page(server, viewport={"width": 800, "height": 700}) as (sync_api, page, errors):
        chooser = page.locator("#file")
        sync_api.expect(chooser).to_be_visible()
        # From the top of the page: the API-key field, then the chooser.
        page.keyboard.press("Tab")
        sync_api.expect(page.locator("#key")).to_be_focused()
        page.keyboard.press("Tab")
        sync_api.expect(chooser).to_be_focused()
        ring = chooser.evaluate("e => { const s = getComputedStyle(e); return [s.outlineStyle, s.outlineWidth]; }")
        assert ring[0] != "none" and ring[1] != "0px", ring
        page.screenshot(path=str(tmp_path / "focused.png"))
        for key in ("Enter", " "):  # both open the chooser
            sync_api.expect(chooser).to_be_focused()
            with page.expect_file_chooser(timeout=15000) as fc:
                page.keyboard.press(key)
            if key == "Enter":
                fc.value.set_files(str(image))
                sync_api.expect(page.locator("#top-label")).to_have_text(expected["predictions"][0]["label"], timeout=15000)
                sync_api.expect(page.locator("#timing")).to_contain_text("inference")
                sync_api.expect(page.locator("#preview")).to_be_visible()
            else:
                # a file the server refuses (and no browser can show)
                fc.value.set_files(files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not an image at all" * 20}])
        sync_api.expect(page.locator("#error")).to_contain_text("Expected", timeout=15000)
        sync_api.expect(page.locator("#top-label")).to_have_text("")
        sync_api.expect(page.locator(".prediction")).to_have_count(0)
        sync_api.expect(page.locator("#timing")).to_have_text("")
        sync_api.expect(page.locator("#preview")).to_be_hidden()
        page.screenshot(path=str(tmp_path / "after-error.png"))
        shots = os.environ.get("EDGEPORT_SCREENSHOTS")  # a folder to keep them in, to look at
        if shots:
            for name in ("focused.png", "after-error.png"):
                shutil.copy(tmp_path / name, os.path.join(shots, name))
        assert not errors, errors
