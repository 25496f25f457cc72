"""`vipa demo` in a real headless Chromium (Debian's package, driven by Playwright) and through
gradio_client's `segment` endpoint."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from conftest import free_port
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def demo(served_checkpoint) -> str:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vipa_cli", "demo", "--checkpoint", str(served_checkpoint), "--port",
         str(port), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        raise AssertionError("the demo did not come up")
    yield url
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def test_gradio_client_calls_segment_and_gets_the_predict_json(demo, scene_photo):
    from gradio_client import Client, handle_file

    client = Client(demo, verbose=False)
    overlay, payload = client.predict(handle_file(str(scene_photo)), "the red square\nthe blue one",
                                      api_name="/segment")
    assert [r["text"] for r in payload["results"]] == ["the red square", "the blue one"]
    assert set(payload["results"][0]) == {"text", "present", "mask_rle", "bbox", "area",
                                          "score"}
    assert payload["results"][0]["mask_rle"]["size"] == [90, 150]
    assert Image.open(overlay).size == (150, 90)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium; "
                                             ".ci/run installs it)")
def test_the_demo_page_runs_an_example_in_a_real_browser(demo, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(demo, wait_until="networkidle")
            page.locator(".gallery-item, [data-testid='examples'] button, table tbody tr").first \
                .click()  # the first example from the built-in data
            page.locator("#vipa-segment").click()
            overlay = page.locator("#vipa-overlay img")
            overlay.wait_for(state="visible", timeout=60_000)
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            text = page.locator("#vipa-text textarea").input_value()
            assert text.strip()  # the example filled in its phrases
            assert overlay.get_attribute("src")
        finally:
            browser.close()
    shot = np.asarray(Image.open(tmp_path / "demo.png"))
    assert shot.shape[0] > 200 and shot.std() > 5  # a rendered page, not a blank one
