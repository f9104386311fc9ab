"""The playground page at `GET /`, driven in headless Chromium (Debian's chromium + chromium-driver, Selenium).

Nothing is downloaded at run time: the browser and the driver are the Debian packages that
`.ci/run` installs; without them these tests skip and say why.
"""

from __future__ import annotations

import pytest
from browser_support import chromium, needs_chromium
from serving_support import MODEL, exported_base, request, shared_server

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(request, trained_dir, tmp_path_factory):
    return shared_server(request, tmp_path_factory, exported_base(trained_dir, tmp_path_factory))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def _wait_for_status(browser, prefix: str, timeout: float = 60.0) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda d: d.find_element(By.ID, "status").text.startswith((prefix, "error")))
    return browser.find_element(By.ID, "status").text


def test_page_is_self_contained_html(server):
    status, page, headers = request("GET", server.url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert f'"model": "{MODEL}"' in page and "src=" not in page and "href=" not in page  # no external assets
    for element in ('id="prompt"', 'id="temperature"', 'type="range"', 'id="length"', 'id="generate"', 'id="output"'):
        assert element in page


def test_generate_streams_text_that_starts_with_the_prompt(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    assert MODEL in browser.title
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("ROMEO:")
    length = browser.find_element(By.ID, "length")
    length.clear()
    length.send_keys("120")
    browser.find_element(By.ID, "generate").click()
    status = _wait_for_status(browser, "done")
    output = browser.find_element(By.ID, "output").text
    screenshot = tmp_path / "playground.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    assert status.startswith("done: 120 characters"), status
    assert output.startswith("ROMEO:") and len(output) > len("ROMEO:") + 50


def test_greedy_output_in_the_page_equals_predict(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    browser.find_element(By.ID, "prompt").send_keys("ANNA:")
    browser.execute_script(
        "const t = document.getElementById('temperature'); t.value = 0;t.dispatchEvent(new Event('input'));"
    )
    assert browser.find_element(By.ID, "temperature-value").text == "0.00"
    length = browser.find_element(By.ID, "length")
    length.clear()
    length.send_keys("50")
    browser.find_element(By.ID, "generate").click()
    assert _wait_for_status(browser, "done").startswith("done: 50 characters")
    body = {"instances": [{"prompt": "ANNA:", "temperature": 0.0, "max_new_chars": 50, "seed": 0}]}
    expected = request("POST", f"{server.url}/v1/models/{MODEL}:predict", body)[1]["predictions"][0]["text"]
    # textContent keeps the newlines exactly; .text would normalise whitespace
    assert browser.execute_script("return document.getElementById('output').textContent") == expected


def test_errors_are_shown_in_the_page(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    browser.find_element(By.ID, "prompt").send_keys("x" * 501)  # above the test server's prompt cap of 500
    browser.find_element(By.ID, "generate").click()
    status = _wait_for_status(browser, "error")
    assert status.startswith("error:") and "cap is 500" in status
    assert browser.find_element(By.ID, "generate").is_enabled()
