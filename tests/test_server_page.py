"""The page works in a real browser: Debian's chromium, driven by Playwright (never `playwright install`)."""

import os
import shutil

import pytest

from conftest import http
from server_helpers import first_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def test_upload_an_image_and_see_the_top_label(server, heldout_dir):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; scripts/test.sh tries)")
    image = first_image(heldout_dir, "triangle")
    expected = http("POST", server.url + "/predict?top_k=1", image.read_bytes(), {"Content-Type": "image/jpeg"})[1]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            # expect() polls from Playwright's isolated world: the page's CSP forbids eval, so no wait_for_function.
            sync_api.expect(page.locator("#model-name")).to_contain_text("shapes", timeout=15000)
            sync_api.expect(page.locator("#details")).to_contain_text("circle, square, triangle")
            page.set_input_files("#file", str(image))
            sync_api.expect(page.locator("#top-label")).to_have_text(expected["predictions"][0]["label"], timeout=15000)
            sync_api.expect(page.locator(".prediction")).to_have_count(3)
            assert page.inner_text("#error") == ""
            assert not errors, errors
        finally:
            browser.close()
