"""The artifact's contract: one description of files, signatures and states, read by every exporter and consumer."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO

from keras_chargen import contract
from keras_chargen.settings import SETTINGS


def test_signatures_are_built_from_the_settings():
    names = [s.name for s in SETTINGS]
    assert contract.SIGNATURES["serving_default"].input_names == ["prompt", *names]
    assert contract.GENERATE.input_names == ["prompt_ids", *[n if n != "stop" else "stop_ids" for n in names]]
    assert contract.GENERATE.output_names == ["ids", "seed"]
    start, chunk = contract.SIGNATURES["decode_start"], contract.SIGNATURES["decode_chunk"]
    assert start.input_names == ["prompt", *names]
    assert chunk.input_names == [*start.output_names, "steps"]  # a stream feeds back what it got
    assert chunk.output_names == [t.name for t in contract.DECODE_STATE] + ["text"]


def test_state_names_order_and_onnx_names():
    assert contract.state_names([2, 2]) == ["h_0", "c_0", "h_1", "c_1"]
    assert contract.state_names([1, 2]) == ["h_0", "h_1", "c_1"]
    assert contract.state_order(["c_1", "h_1", "c_0", "h_0", "h_10", "h_2"]) == [
        "h_0",
        "c_0",
        "h_1",
        "c_1",
        "h_2",
        "h_10",
    ]
    assert [contract.onnx_output_name(contract.STEP, n) for n in ("logits", "h_0", "c_1")] == [
        "logits",
        "new_h_0",
        "new_c_1",
    ]
    assert contract.onnx_output_name(contract.GENERATE, "seed") == "new_seed"
    assert contract.onnx_output_name(contract.GENERATE, "ids") == "ids"
    expanded = contract.expand(contract.STEP.inputs, [("h_0", 8), ("c_0", 8)])
    assert [(t.name, t.shape) for t in expanded] == [("ids", (None,)), ("h_0", (None, 8)), ("c_0", (None, 8))]


@pytest.mark.parametrize(
    "doc, marker, signatures",
    [
        ("docs/export.md", "signatures table", contract.SIGNATURES.values()),
        ("docs/export.md", "id signatures table", contract.ID_SIGNATURES.values()),
        ("docs/serving.md", "signatures table", contract.SIGNATURES.values()),
        ("docs/inspect.md", "inspect signatures table", contract.inspect_signatures()),
    ],
)
def test_the_docs_tables_are_the_generated_ones(doc, marker, signatures):
    text = (REPO / doc).read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker}: .*? -->\n(.*?)\n<!-- end of {marker} -->", text, re.S)
    assert match is not None and match.group(1) == contract.markdown_table(signatures)


# A setting added to a copy of the table before anything else is imported: every consumer must take it.
DUMMY = r"""
import json, sys, tempfile
from pathlib import Path
from keras_chargen import settings

dummy = settings.Setting("dummy", "float32", 1.0, "a number > 0 (1 = off)", "a test setting", low=0, low_open=True)
settings.SETTINGS = (*settings.SETTINGS, dummy)
settings.BY_NAME["dummy"] = dummy

import numpy as np
import tensorflow as tf
from keras_chargen import CharGenerator, ChargenConfig, ChargenError, Vocabulary, build_model, contract
from keras_chargen.cli import build_parser, check_generate_flags
from keras_chargen.client import _check_sampling
from keras_chargen.export.onnx import write_onnx
from keras_chargen.export.runtimes import OnnxGenerator, TFLiteGenerator
from keras_chargen.export.savedmodel import write_savedmodel
from keras_chargen.export.tflite import write_tflite
from keras_chargen.serving import protocol
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.streaming import parse_stream_request

found = {}
vocab = Vocabulary(list("\nab c"))
generator = CharGenerator(build_model(ChargenConfig(units=8, num_layers=1, embedding_dim=4), vocab.size), vocab.tokens)
found["api"] = generator.generate(["ab"], 0.0, 5, dummy=2.0) == generator.generate(["ab"], 0.0, 5)
try:
    generator.generate(["ab"], 0.0, 5, dummy=0.0)
except ChargenError as err:
    found["api_check"] = str(err)
out = Path(tempfile.mkdtemp())
vocab_file = out / "vocab.json"
vocab.save(vocab_file)
for name, write in (("savedmodel", write_savedmodel), ("tflite", write_tflite), ("onnx", write_onnx)):
    (out / name).mkdir()
    write(generator, out / name, vocab_file)
loaded = tf.saved_model.load(str(out / "savedmodel"))
found["savedmodel"] = {k: sorted(v.structured_input_signature[1]) for k, v in loaded.signatures.items()}
served = loaded.signatures["serving_default"](
    **{s.name: tf.constant([s.default if s.default is not None else s.off]) for s in settings.SETTINGS},
    prompt=tf.constant(["ab"]),
)
found["served"] = served["generated"].numpy()[0].decode()
tflite = TFLiteGenerator(out / "tflite" / "generate.tflite")
found["tflite"] = sorted(tflite.runner.get_input_details())
found["tflite_text"] = tflite.generate_text(["ab"], 5, temperature=0.0, dummy=2.0)
onnx = OnnxGenerator(out / "onnx" / "generate.onnx")
found["onnx"] = sorted(i.name for i in onnx.session.get_inputs())
found["onnx_text"] = onnx.generate_text(["ab"], 5, temperature=0.0, dummy=2.0)
args = build_parser().parse_args(["generate", "model", "--dummy", "0"])
found["cli"] = args.dummy
try:
    check_generate_flags(args)
except ChargenError as err:
    found["cli_check"] = str(err)
for where, check in (
    ("rest", lambda: protocol.check_settings({"dummy": np.array([0.0], np.float32)})),
    ("stream", lambda: parse_stream_request({"prompt": "a", "dummy": 0.0}, ServingConfig())),
):
    try:
        check()
    except RequestError as err:
        found[where] = err.status, err.message
found["stream_default"] = parse_stream_request({"prompt": "a"}, ServingConfig())["dummy"]
found["rest_default"] = protocol.defaults_for("serving_default", {"dummy": None, "top_k": None})
try:
    _check_sampling({"dummy": 0.0})
except ChargenError as err:
    found["client"] = str(err)
print(json.dumps(found))
"""


def test_a_setting_added_to_the_table_reaches_every_signature_and_every_check(tmp_path):
    done = subprocess.run([sys.executable, "-c", DUMMY], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["api"] is True and found["api_check"].startswith("dummy must be a number > 0")
    for name in ("serving_default", "decode_start", "decode_chunk"):
        assert "dummy" in found["savedmodel"][name], name
    assert found["served"] and "dummy" in found["tflite"] and "dummy" in found["onnx"]
    assert found["tflite_text"] == found["onnx_text"]
    assert found["cli"] == 0.0 and found["cli_check"].startswith("--dummy must be")  # named by its flag
    assert found["rest"] == [400, "dummy must be a number > 0 (1 = off); got 0"]
    assert found["stream"] == [400, "dummy must be a number > 0 (1 = off); got 0.0"]
    assert found["stream_default"] == 1.0 and found["rest_default"] == {"dummy": 1.0, "top_k": 0}
    assert found["client"].startswith("dummy must be")
