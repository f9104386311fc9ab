"""The one description of the sampling settings, and everything derived from it."""

import math
import re

import numpy as np
import pytest
from conftest import REPO

from keras_chargen import ChargenError
from keras_chargen.settings import BY_NAME, SETTINGS, check_api, markdown_table, offs


def test_readme_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- settings table: .*? -->\n(.*?)\n<!-- end of settings table -->", readme, re.S)
    assert match is not None and match.group(1) == markdown_table()


def test_every_consumer_derives_from_the_description():
    from keras_chargen.generation import signature
    from keras_chargen.serving.streaming import parse_stream_request

    assert [s.name for s in signature()] == ["prompt"] + [s.name for s in SETTINGS]
    assert offs() == {"top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "stop": ""}
    from keras_chargen.serving.config import ServingConfig

    params = parse_stream_request({"prompt": "a"}, ServingConfig())
    assert params == {"prompt": "a", "temperature": 0.8, "max_new_chars": 500, "seed": -1, **offs(), "stop": [""]}


@pytest.mark.parametrize(
    "name, good, bad",
    [
        ("temperature", [0, 0.5, np.float32(2.0)], [-0.1, math.nan, math.inf, "1", True]),
        ("max_new_chars", [0, 1, 100_000, np.int64(7)], [-1, 100_001, 2.0, True]),
        ("seed", [-1, 0, 2**31 - 1], [2**31, -(2**31) - 1, 1.5]),
        ("top_k", [0, 1, 40], [-1, 2.5, False]),
        ("top_p", [1, 0.9, 1e-6], [0, 1.01, math.nan, "0.9"]),
        ("repetition_penalty", [1, 0.5, 1.3], [0, -1, math.inf, math.nan]),
        ("stop", ["", "\n\n"], [5, None]),
    ],
)
def test_ranges_as_the_signature_takes_them(name, good, bad):
    spec = BY_NAME[name]
    for value in good:
        assert spec.check(value) == value
    for value in bad:
        with pytest.raises(ChargenError, match=f"^{name} must be "):
            spec.check(value)


def test_api_form_takes_none_for_off_and_refuses_the_off_values_of_top_k_stop_and_seed():
    assert [check_api(n, None) for n in ("top_k", "top_p", "repetition_penalty", "stop", "seed")] == [
        0,
        1.0,
        1.0,
        "",
        -1,
    ]
    for name, value, message in [
        ("top_k", 0, r"top_k must be an integer >= 1 \(None = off\); got 0"),
        ("stop", "", r"stop must be a non-empty string \(None = off\); got ''"),
        ("seed", -3, r"seed must be an integer in 0..2147483647 \(None = random\); got -3"),
    ]:
        with pytest.raises(ChargenError, match=message):
            check_api(name, value)
    assert check_api("top_k", 5) == 5 and check_api("top_p", 1) == 1.0


def test_the_settings_module_needs_no_tensorflow():
    import subprocess
    import sys

    code = "import sys; import keras_chargen.settings, keras_chargen.client; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
