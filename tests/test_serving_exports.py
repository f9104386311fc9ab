"""The server runs only what was exported: it imports no model, decoder or Keras, and it serves an older export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import REPO
from serving_support import SERVER_FLAGS, request, shared_server

OLD_EXPORT = REPO / "tests" / "data" / "export_4edd89f.tar.gz"  # exported by main at 4edd89f (make_old_export.py)
FORBIDDEN = (
    "generation",
    "decoding",
    "export",
    "model",
    "codecs",
    "sampling",
    "tokenizer",
    "inspection",
    "cell_features",
)

IMPORT_ALL = r"""
import importlib, json, pkgutil, sys
import tensorflow
before = set(sys.modules)
import keras_chargen.serving as serving
for module in pkgutil.walk_packages(serving.__path__, "keras_chargen.serving."):
    importlib.import_module(module.name)
print(json.dumps({
    "added_keras": sorted(m for m in set(sys.modules) - before if m.split(".")[0] == "keras"),
    "keras": sorted(m for m in sys.modules if m.split(".")[0] == "keras"),
    "package": sorted(m for m in sys.modules if m.startswith("keras_chargen.")),
}))
"""


@pytest.mark.parametrize("legacy_keras", [False, True])
def test_the_serving_package_imports_no_keras_and_no_model_or_decoder_module(legacy_keras):
    # TensorFlow 2.21 imports Keras by itself (`keras.src.optimizers`, for its SavedModel registry) unless
    # TF_USE_LEGACY_KERAS points it at tf_keras, which is not installed: then no Keras module loads at all.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy_keras:
        env["TF_USE_LEGACY_KERAS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["added_keras"] == []
    if legacy_keras:
        assert found["keras"] == []
    assert "keras_chargen.serving.streaming" in found["package"]
    loaded = [m for m in found["package"] if m.split(".")[1] in FORBIDDEN]
    assert loaded == [], loaded


@pytest.fixture(scope="module")
def old_server(request, tmp_path_factory):
    """A server over a base path whose only version was exported by the code before issue 19."""
    base = tmp_path_factory.mktemp("old") / "tiny"  # the model name the serving helpers expect
    base.mkdir()
    with tarfile.open(OLD_EXPORT) as archive:
        archive.extractall(base, filter="data")
    return shared_server(request, tmp_path_factory, base, SERVER_FLAGS)


def test_an_older_export_serves_predict_and_its_stream_names_the_re_export(old_server):
    url = f"{old_server.url}/v1/models/tiny"
    body = {"inputs": {"prompt": ["ab", "c"], "temperature": [0.0], "max_new_chars": [6], "seed": [1]}}
    status, answer, _ = request("POST", url + ":predict", body)
    assert status == 200 and set(answer["outputs"]) == {"generated", "text"}  # no `seed` output back then
    assert [len(t) for t in answer["outputs"]["generated"]] == [6, 6]
    row = {"instances": [{"prompt": "ab", "temperature": 0.0, "max_new_chars": 6, "seed": 1, "stop": "."}]}
    status, answer, _ = request("POST", url + ":predict", row)
    assert status == 200 and answer["predictions"][0]["text"].startswith("ab")
    status, answer, _ = request("POST", url + ":stream", {"prompt": "ab", "max_new_chars": 6})
    assert status == 400
    assert "exported without the 'decode_start' and 'decode_chunk' signatures; re-export it" in answer["error"]
    assert "or use :predict" in answer["error"]


def test_an_older_export_answers_inspect_with_a_clear_400(old_server):
    body = {"signature_name": "inspect", "inputs": {"text": ["abc"], "layer": [0], "cell": [-1]}}
    status, answer, _ = request("POST", f"{old_server.url}/v1/models/tiny:predict", body)
    assert status == 400 and "inspect" in answer["error"], answer
