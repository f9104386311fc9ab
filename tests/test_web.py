"""The web export (`export --format web`) in headless Chromium: the page's text equals `serving_default`'s `generated`.

The exported folder is served by a static file server in a thread; every request runs through
chargen.js in one page session (streamed and in one call). Needs Debian's chromium + chromium-driver and
onnxruntime-web in `web/node_modules` (`npm ci --prefix web`); without them these tests skip and say why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from browser_support import chromium, console_errors, needs_chromium
from conftest import REPO
from web_support import needs_web_runtime, run_in_page, static_server

from keras_chargen import contract
from keras_chargen.errors import ChargenError
from keras_chargen.export.web import RUNTIME_ENV, runtime_dir

PROMPTS = [
    "ROMEO:",
    "",
    "the ",
    "First Citizen:\n",
    "é€x",
    "Ünïcödé 🙂 words ",
    "KING",
    "\n\n",
    "to be, or not",
    "日本語のテキスト。",
]
# three setting mixes: plain sampling, every filter, and a stop string of two tokens
MIXES = {
    "char": [
        {"temperature": 0.8},
        {"temperature": 1.0, "topK": 5, "topP": 0.9, "repetitionPenalty": 1.3},
        {"temperature": 0.7, "stop": "e "},
    ],
    "word": [
        {"temperature": 0.8},
        {"temperature": 1.0, "topK": 5, "topP": 0.9, "repetitionPenalty": 1.3},
        {"temperature": 0.7, "stop": ", and"},
    ],
}
LENGTH = {"char": 60, "word": 20}
SETTING = {"length": "max_new_chars", "topK": "top_k", "topP": "top_p", "repetitionPenalty": "repetition_penalty"}


def page_requests(level: str) -> list[dict]:
    """10 prompts × 3 mixes, each row its own fixed seed (one of them the largest)."""
    requests = []
    for m, mix in enumerate(MIXES[level]):
        for p, prompt in enumerate(PROMPTS):
            seed = 2**31 - 1 if (m, p) == (2, 9) else 1000 + 10 * m + p
            requests.append({"prompt": prompt, "length": LENGTH[level], "seed": seed, **mix})
    return requests


def savedmodel_generated(version_dir: Path, requests: list[dict]) -> list[str]:
    """`serving_default`'s `generated` for chargen.js requests, all rows in one call."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    offs = {"top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "stop": ""}
    rows = [{**offs, **{SETTING.get(k, k): v for k, v in r.items()}} for r in requests]

    def column(name, dtype):
        return tf.constant([row[name] for row in rows], dtype)

    out = serve(
        prompt=column("prompt", tf.string),
        temperature=column("temperature", tf.float32),
        max_new_chars=column("max_new_chars", tf.int32),
        seed=column("seed", tf.int32),
        top_k=column("top_k", tf.int32),
        top_p=column("top_p", tf.float32),
        repetition_penalty=column("repetition_penalty", tf.float32),
        stop=column("stop", tf.string),
    )
    return [t.decode("utf-8") for t in out["generated"].numpy()]


def web_export(model_dir: Path, tmp_path_factory) -> Path:
    from keras_chargen.export import export_model

    base = tmp_path_factory.mktemp("web") / "model"
    (folder,) = export_model(model_dir, base, "web")
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def check_level(level: str, folder: Path, savedmodel: Path, browser) -> None:
    requests = page_requests(level)
    with static_server(folder) as url:
        results = run_in_page(browser, url, requests)
        again = run_in_page(browser, url, [{"prompt": "ROMEO:", "length": LENGTH[level], "seed": -1}])[0]
        # any cut of the decode loop into calls gives the same text: one token per call, and all at once
        cuts = {n: run_in_page(browser, url, requests[::3], chunks=[n]) for n in (1, 1000)}
        assert not console_errors(browser)
    assert all("error" not in r for r in results), [r for r in results if "error" in r][:3]
    expected = savedmodel_generated(savedmodel, requests)
    got = [r["generated"] for r in results]
    mismatched = [(r, g, e) for r, g, e in zip(requests, got, expected) if g != e]
    assert not mismatched, mismatched[:3]
    assert all("".join(r["pieces"]) == r["generated"] for r in results)  # the stream gives the same text
    for n, cut in cuts.items():
        assert [r["generated"] for r in cut] == expected[::3], n
    assert [r["seed"] for r in results] == [r["seed"] for r in requests]
    assert any(len(r["pieces"]) > 2 for r in results)  # text arrives in several pieces
    assert len({*got}) > 20  # the mixes and seeds really differ
    stopped = [g for r, g in zip(requests, got) if "stop" in r and g.endswith(r["stop"])]
    assert stopped  # the stop string ended some rows
    # a negative seed: the page draws one and returns it; the SavedModel gives the same text for it
    assert 0 <= again["seed"] <= 2**31 - 1
    replay = {"prompt": "ROMEO:", "length": LENGTH[level], "seed": again["seed"], "temperature": 0.8}
    assert savedmodel_generated(savedmodel, [replay]) == [again["generated"]]


@needs_chromium
@needs_web_runtime
def test_page_text_equals_serving_default_char(trained_dir, exported_all, browser, tmp_path_factory):
    folder = web_export(trained_dir, tmp_path_factory)
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert names == {
        contract.WEB_PAGE,
        contract.WEB_MODULE,
        contract.WEB_DECODE,
        contract.WEB_MANIFEST,
        contract.VOCAB_FILE,
        *(f"{contract.WEB_RUNTIME_DIR}/{n}" for n in contract.WEB_RUNTIME_FILES),
    }
    check_level("char", folder, exported_all / "1", browser)


@needs_chromium
@needs_web_runtime
def test_page_text_equals_serving_default_word(word_dir, word_exported, browser, tmp_path_factory):
    folder = web_export(word_dir, tmp_path_factory)
    assert json.loads((folder / contract.WEB_MANIFEST).read_text())["level"] == "word"
    check_level("word", folder, word_exported / "1", browser)


# Generate, and press Stop as soon as the first text shows (a mutation observer: no polling delay).
STOP_AT_FIRST_TEXT = """
const generated = document.getElementById("generated");
new MutationObserver((changes, observer) => {
  observer.disconnect();
  document.getElementById("stop-button").click();
}).observe(generated, {childList: true, characterData: true, subtree: true});
document.getElementById("generate").click();
"""


@needs_chromium
@needs_web_runtime
def test_page_controls_and_bad_options(trained_dir, browser, tmp_path_factory):
    """The page itself: Generate streams into the output with the settings of its controls; bad options are a
    one-line error; Stop stops."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder = web_export(trained_dir, tmp_path_factory)
    with static_server(folder) as url:
        results = run_in_page(browser, url, [{"prompt": "x", "topK": 1.5}, {"prompt": "x", "color": 1}])
        assert results[0]["error"].startswith("topK must be an integer") and "\n" not in results[0]["error"]
        assert results[1]["error"].startswith("unknown option color")
        for element, value in (("prompt", "ROMEO:"), ("seed", "5"), ("top-k", "3"), ("stop", "\\n")):
            browser.find_element(By.ID, element).send_keys(value)
        length = browser.find_element(By.ID, "length")
        length.clear()
        length.send_keys("40")
        browser.find_element(By.ID, "generate").click()
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith(("done", "error")))
        status = browser.find_element(By.ID, "status").text
        assert status.startswith("done:") and "seed 5" in status, status
        shown = browser.execute_script("return document.getElementById('generated').textContent")
        expected = run_in_page(browser, url, [{"prompt": "ROMEO:", "length": 40, "seed": 5, "topK": 3, "stop": "\n"}])
        assert shown == expected[0]["generated"]
        browser.find_element(By.ID, "top-p").send_keys("7")
        browser.find_element(By.ID, "generate").click()
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text.startswith(("done", "error")))
        assert browser.find_element(By.ID, "status").text.startswith("error: topP must be a number in (0, 1]")
        browser.find_element(By.ID, "top-p").clear()
        for element, value in (("length", "100000"), ("stop", "")):
            browser.find_element(By.ID, element).clear()
            browser.find_element(By.ID, element).send_keys(value)
        browser.execute_script(STOP_AT_FIRST_TEXT)
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith(("stopped", "done")))
        assert browser.find_element(By.ID, "status").text == "stopped"
        stopped_at = len(browser.execute_script("return document.getElementById('generated').textContent"))
        assert stopped_at < 100_000 and browser.find_element(By.ID, "generate").is_enabled()


def test_missing_runtime_is_a_one_line_error_naming_npm_ci(tmp_path, trained_dir):
    with pytest.raises(ChargenError, match="npm ci --prefix") as caught:
        runtime_dir(tmp_path / "web", environ={})
    assert "\n" not in str(caught.value)
    env = {**os.environ, RUNTIME_ENV: str(tmp_path / "empty"), "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "keras_chargen", "export", str(trained_dir), "--format", "web", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode != 0 and len(lines) == 1 and "npm ci --prefix" in lines[0], run.stderr
    assert not (tmp_path / "web").exists()
