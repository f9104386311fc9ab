"""`keras-chargen inspect`: the JSON and the self-contained HTML report, opened in headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser_support import chromium, coloured_pixels, console_errors, needs_chromium
from conftest import CORPUS

from keras_chargen.cli import main
from keras_chargen.inspection import TOP, inspect_text

TEXT = CORPUS.read_text("utf-8")[:3000]
SHOWN = 400


@pytest.fixture(scope="module")
def reports(trained_dir, tmp_path_factory) -> dict[str, Path]:
    """`inspect --text FILE --json --html` run once through the CLI entry point."""
    folder = tmp_path_factory.mktemp("inspect")
    text = folder / "text.txt"
    text.write_text(TEXT, "utf-8")
    paths = {"text": text, "json": folder / "report.json", "html": folder / "report.html"}
    argv = ["inspect", str(trained_dir), "--text", str(text), "--max-positions", str(SHOWN)]
    assert main([*argv, "--json", str(paths["json"]), "--html", str(paths["html"])]) == 0
    return paths


def test_json_report_has_the_documented_fields_and_matches_the_api(reports, generator, capsys):
    report = json.loads(reports["json"].read_text("utf-8"))
    expected = inspect_text(generator, TEXT, max_positions=SHOWN)
    assert report["bits_per_char"] == pytest.approx(expected.bits_per_char, rel=1e-5)
    assert report["positions_total"] == len(TEXT) and report["positions_shown"] == SHOWN == len(report["positions"])
    first, second = report["positions"][:2]
    assert first == {"token": TEXT[0], "prob": None, "surprisal_bits": None, "top": []}
    assert second["token"] == TEXT[1] and second["prob"] == pytest.approx(float(expected.prob[1]), rel=1e-5)
    assert len(second["top"]) == TOP and all(isinstance(t, str) and 0 <= p <= 1 for t, p in second["top"])
    cells = {c["feature"]: c for c in report["cells"]}
    assert set(cells) == {"line_position", "in_word", "after_newline", "upper_run"}  # no quotes or brackets here
    assert report["constant_features"] == ["in_quotes", "bracket_depth"]
    for cell in report["cells"]:
        assert set(cell) == {"feature", "layer", "kind", "cell", "correlation"} and -1 <= cell["correlation"] <= 1
    assert abs(cells["line_position"]["correlation"]) > 0.5  # the tiny model counts the position in the line


def test_cli_prints_the_summary_and_the_best_cells(trained_dir, tmp_path, capsys):
    assert main(["inspect", str(trained_dir), "--prompt", r"ANNA:\nThe king", "--generate", "30", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"inspected 44 chars: \d+\.\d{4} bits/char over the 43 with a prediction", out), out
    assert "line_position  layer 0" in out and "not in this text: in_quotes, bracket_depth" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prompt", "A"], "the text has 1 char; inspecting needs at least 2"),
        (["--text", "missing.txt"], "no such file or directory: missing.txt"),
    ],
)
def test_cli_errors_are_one_line(trained_dir, reports, capsys, argv, message):
    assert main(["inspect", str(trained_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--text", "TEXT", "--generate", "5"], "--generate needs --prompt"),
        (["--prompt", "AB", "--max-positions", "-1"], "--max-positions must be an integer >= 0"),
        (["--prompt", "AB", "--generate", "5", "--temperature", "-1"], "--temperature must be a finite number >= 0"),
        (
            ["--prompt", "AB", "--generate", "5", "--seed", "-3"],
            "--seed must be an integer in 0..2147483647; omit --seed",
        ),
    ],
)
def test_cli_flag_errors_print_the_usage_and_one_line_naming_the_flag(trained_dir, reports, capsys, argv, message):
    argv = [str(reports["text"]) if a == "TEXT" else a for a in argv]
    assert main(["inspect", str(trained_dir), *argv]) == 2
    usage, error = capsys.readouterr().err.strip().splitlines()
    assert usage.startswith("usage: keras-chargen inspect MODEL_DIR") and error.startswith(
        "keras-chargen inspect: error: "
    )
    assert message in error, error


def test_html_report_is_self_contained(reports):
    page = reports["html"].read_text("utf-8")
    assert "src=" not in page and "href=" not in page and "http://" not in page and "https://" not in page
    assert page.count("<script") == 3 and "InspectView" in page


@needs_chromium
def test_html_report_opens_in_chromium_with_coloured_text(reports, tmp_path_factory):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.common.by import By

    browser = chromium(tmp_path_factory.mktemp("chromium-profile"), 1100, 1300)
    try:
        browser.get(reports["html"].as_uri())
        spans = browser.find_elements(By.CSS_SELECTOR, "#text span")
        assert len(spans) == SHOWN
        surprisal = [s.value_of_css_property("background-color") for s in spans[1:50]]
        assert len(set(surprisal)) > 3  # coloured by surprisal, not all alike
        spans[5].click()
        tip = browser.find_element(By.CSS_SELECTOR, ".iv-tip")
        assert tip.is_displayed() and len(tip.find_elements(By.CSS_SELECTOR, "tr")) == TOP
        assert "at position 5" in tip.text and "bits" in tip.text
        spans[5].click()  # unpin
        browser.find_element(By.CSS_SELECTOR, "#cells tbody tr").click()  # the best cell of the first feature
        spans = browser.find_elements(By.CSS_SELECTOR, "#text span")  # drawn anew
        by_cell = [s.value_of_css_property("background-color") for s in spans[1:50]]
        assert by_cell != surprisal and "follows line_position" in browser.find_element(By.ID, "cell-info").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#plots svg")) == 3  # input, forget, output gates
        shot = tmp_path_factory.mktemp("shots") / "report.png"
        assert browser.save_screenshot(str(shot))
        assert coloured_pixels(shot) > 5000, "the screenshot shows no coloured text"
        assert console_errors(browser) == []
    finally:
        browser.quit()


def test_cli_generates_and_inspects_with_a_word_model(tmp_path, capsys):
    from conftest import tiny_config

    from keras_chargen import Vocabulary, build_model
    from keras_chargen.saving import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE
    from keras_chargen.tokenizer import tokenize

    config = tiny_config(level="word")
    vocab = Vocabulary(list(dict.fromkeys(tokenize(TEXT, False))), level="word")
    config.save(tmp_path / CONFIG_FILE)
    vocab.save(tmp_path / VOCAB_FILE)
    build_model(config, vocab.size).save(tmp_path / WEIGHTS_FILE)  # untrained: any weights do here
    json_path = tmp_path / "r.json"
    argv = ["inspect", str(tmp_path), "--prompt", "The zebra king", "--generate", "6", "--seed", "2"]
    assert main([*argv, "--json", str(json_path)]) == 0  # "zebra" is unknown: fed as [UNK]
    report = json.loads(json_path.read_text("utf-8"))
    assert report["level"] == "word" and report["positions_total"] == 3 + 6
    assert [p["token"] for p in report["positions"][:3]] == ["The", " zebra", " king"]
    assert "inspected 9 words" in capsys.readouterr().out
