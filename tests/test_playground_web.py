"""The playground's "in this browser" mode: a version with a web export runs in the page and gives `:predict`'s text.

Needs Debian's chromium + chromium-driver and onnxruntime-web in `web/node_modules` (`npm ci --prefix
web`); without them these tests skip and say why.
"""

from __future__ import annotations

import urllib.request

import pytest
from browser_support import chromium, console_errors, needs_chromium
from serving_support import MODEL, request, shared_server
from web_support import needs_web_runtime

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
pytestmark = [needs_chromium, needs_web_runtime]

SETTINGS = {"top_k": "5", "top_p": "0.9", "repetition_penalty": "1.2", "stop": "e\\n"}  # as typed (\n: newline)


@pytest.fixture(scope="module")
def server(request, trained_dir, tmp_path_factory):
    """A server over a base path whose version 1 has a SavedModel and a web export."""
    from keras_chargen.export import export_model

    base = tmp_path_factory.mktemp("with-web") / MODEL
    export_model(trained_dir, base, "savedmodel")
    export_model(trained_dir, base, "web")
    return shared_server(request, tmp_path_factory, base)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def test_web_files_are_served_and_nothing_else(server):
    status, manifest, headers = request("GET", server.url + "/web/1/chargen.json")
    assert status == 200 and manifest["model"] == "decode.onnx"
    with urllib.request.urlopen(server.url + "/web/1/ort/ort-wasm-simd-threaded.wasm", timeout=30) as wasm:
        assert wasm.headers["content-type"] == "application/wasm" and wasm.read(4) == b"\0asm"
    assert request("GET", server.url + "/web/1/chargen.js")[2]["content-type"].startswith("text/javascript")
    for path in ("/web/1/missing.js", "/web/2/chargen.js", "/web/1/../1/chargen.json", "/web/x/chargen.js"):
        assert request("GET", server.url + path)[0] == 404, path
    page = request("GET", server.url + "/")[1]
    assert '"web": "/web/1/"' in page


def _run(browser, server, where: str, temperature: str, seed: str, length: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    assert browser.find_element(By.ID, "where").is_displayed()
    browser.find_element(By.CSS_SELECTOR, f"input[name=where][value={where}]").click()
    browser.find_element(By.ID, "prompt").send_keys("ROMEO:")
    browser.execute_script(
        "const t = document.getElementById('temperature'); t.value = arguments[0]; "
        "t.dispatchEvent(new Event('input'));",
        temperature,
    )
    for element, value in (("length", length), ("seed", seed)):
        browser.find_element(By.ID, element).clear()
        browser.find_element(By.ID, element).send_keys(value)
    for name, value in SETTINGS.items():
        browser.find_element(By.ID, f"setting-{name}").send_keys(value)
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 90).until(lambda d: d.find_element(By.ID, "status").text.startswith(("done", "error")))
    status = browser.find_element(By.ID, "status").text
    return status, browser.execute_script("return document.getElementById('output').textContent")


def test_in_this_browser_gives_the_servers_text_with_every_setting(server, browser):
    body = {
        "instances": [
            {
                "prompt": "ROMEO:",
                "temperature": 0.9,
                "max_new_chars": 80,
                "seed": 11,
                "top_k": 5,
                "top_p": 0.9,
                "repetition_penalty": 1.2,
                "stop": "e\n",
            }
        ]
    }
    expected = request("POST", f"{server.url}/v1/models/{MODEL}:predict", body)[1]["predictions"][0]["text"]
    status, shown = _run(browser, server, "browser", "0.9", "11", "80")
    assert status.startswith("done:") and "in this browser" in status, status
    assert shown == expected
    assert not console_errors(browser)
    status, on_server = _run(browser, server, "server", "0.9", "11", "80")
    assert status.startswith("done:") and "in this browser" not in status and on_server == expected
