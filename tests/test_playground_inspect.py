"""The playground's sampling controls, inspect view and sampling chart, driven in headless Chromium."""

from __future__ import annotations

import pytest
from browser_support import chromium, console_errors, needs_chromium
from serving_support import MODEL, exported_base, request, shared_server

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
pytestmark = needs_chromium
PREDICT = f"/v1/models/{MODEL}:predict"


@pytest.fixture(scope="module")
def server(request, trained_dir, tmp_path_factory):
    return shared_server(request, tmp_path_factory, exported_base(trained_dir, tmp_path_factory))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"), 1100, 1400)
    yield driver
    driver.quit()


def wait_for(browser, element_id: str, done, timeout: float = 60.0) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda d: done(d.find_element(By.ID, element_id).text))
    return browser.find_element(By.ID, element_id).text


def type_into(browser, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(text)


def test_every_sampling_setting_reaches_the_stream(server, browser):
    browser.get(server.url + "/")
    for name in ("top_k", "top_p", "repetition_penalty", "stop"):
        assert browser.find_element("id", f"setting-{name}").get_attribute("placeholder") == "off"
    type_into(browser, "prompt", "ANNA:")
    browser.execute_script("const t = document.getElementById('temperature'); t.value = 1.2;")
    type_into(browser, "length", "150")
    type_into(browser, "seed", "7")
    type_into(browser, "setting-top_k", "6")
    type_into(browser, "setting-top_p", "0.9")
    type_into(browser, "setting-repetition_penalty", "1.3")
    type_into(browser, "setting-stop", r"\n\n")  # typed as an escape
    browser.find_element("id", "generate").click()
    assert wait_for(browser, "status", lambda s: s.startswith(("done", "error"))).startswith("done")
    settings = dict(temperature=1.2, seed=7, top_k=6, top_p=0.9, repetition_penalty=1.3, stop="\n\n")
    body = {"instances": [{"prompt": "ANNA:", "max_new_chars": 150, **settings}]}
    expected = request("POST", server.url + PREDICT, body)[1]["predictions"][0]["text"]
    assert browser.execute_script("return document.getElementById('output').textContent") == expected
    assert expected.endswith("\n\n") or len(expected) == len("ANNA:") + 150


def test_inspect_view_colours_the_text_and_shows_the_alternatives(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    type_into(browser, "prompt", "ROMEO:\nThe king is bright.\nMy lord")
    browser.find_element(By.ID, "inspect").click()  # nothing generated yet: the prompt is inspected
    assert wait_for(browser, "inspect-status", lambda s: "positions" in s or "error" in s).startswith("34 positions")
    spans = browser.find_elements(By.CSS_SELECTOR, "#inspected span")
    assert "".join(s.get_attribute("textContent") for s in spans) == "ROMEO:\nThe king is bright.\nMy lord"
    confidence = [s.value_of_css_property("background-color") for s in spans[1:]]
    assert len(set(confidence)) > 3
    spans[8].click()  # 'h' of "The"
    tip = browser.find_element(By.CSS_SELECTOR, ".iv-tip")
    assert tip.is_displayed() and len(tip.find_elements(By.CSS_SELECTOR, "tr")) == 5
    body = {"signature_name": "inspect", "inputs": {"text": ["ROMEO:\nThe king is bright.\nMy lord"], "layer": [0]}}
    served = request("POST", server.url + PREDICT, {**body, "inputs": {**body["inputs"], "cell": [0]}})[1]
    assert f"p = {served['outputs']['prob'][0][8]:.3g}" in tip.text
    spans[8].click()  # unpin
    browser.find_element(By.CSS_SELECTOR, "input[name=inspect-colour][value=cell]").click()
    spans = browser.find_elements(By.CSS_SELECTOR, "#inspected span")
    by_cell = [s.value_of_css_property("background-color") for s in spans[1:]]
    assert by_cell != confidence and len(set(by_cell)) > 3
    type_into(browser, "inspect-cell", "5")
    browser.find_element(By.ID, "inspect-kind").click()  # the cell box loses focus: its change event fires
    wait_for(browser, "inspect-status", lambda s: "positions" in s)
    assert [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#inspect-kind option")] == ["h", "c", "i", "f", "o"]
    assert console_errors(browser) == []


def test_sampling_chart_shows_the_distribution_after_each_setting(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    type_into(browser, "setting-top_k", "2")
    type_into(browser, "prompt", "ROMEO:\nThe ki")  # the cursor is at the end
    wait_for(browser, "explain-status", lambda s: s.startswith("after"))
    bars = browser.execute_script(
        """const out = {};
        for (const r of document.querySelectorAll('#explain-chart rect.bar')) {
          (out[r.dataset.stage] = out[r.dataset.stage] || []).push(Number(r.querySelector('title').textContent));
        }
        return out;"""
    )
    assert list(bars) == ["model", "repetition_penalty", "temperature", "top_k", "top_p"]
    for stage, probs in bars.items():
        assert sum(probs) == pytest.approx(1, abs=2e-3), stage  # the shown tokens and the rest
    assert sum(p > 0 for p in bars["top_k"][:-1]) == 2 and bars["top_k"][-1] == 0  # two tokens left, no rest
    assert bars["model"] == bars["repetition_penalty"]  # the penalty is off
    assert browser.find_element(By.ID, "explain-status").text.startswith("after “ROMEO:⏎The ki”")
    assert console_errors(browser) == []


def test_a_version_without_the_signatures_hides_both_panels(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from keras_chargen.serving.config import ServingConfig
    from keras_chargen.serving.playground import playground_html

    page = tmp_path / "old.html"  # an export made before `inspect` and `explain_sampling` existed
    page.write_text(playground_html(MODEL, [1], ServingConfig(), ("decode", "encode", "serving_default", "step")))
    browser.get(page.as_uri())
    assert not browser.find_element(By.ID, "inspect-panel").is_displayed()
    assert not browser.find_element(By.ID, "explain-panel").is_displayed()
    assert browser.find_element(By.ID, "setting-top_k").is_displayed()  # the settings stay
    assert console_errors(browser) == []
