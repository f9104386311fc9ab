"""Export API, layout, errors and atomicity; the SavedModel checked in a process that cannot import keras_chargen."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import keras_step_logits

from keras_chargen import ChargenError, Vocabulary, contract
from keras_chargen.cli import main
from keras_chargen.export import artifact_dir, export_model, export_savedmodel, staged_dirs

PARITY_PROMPT = (
    "CÉLINE:\nMy lord is bright, I think.\nThe king remains bright.\n\n"
    "ÉLODIE:\nThe king is quiet?\n\nANNA:\nThe r"
)  # parity feeds its first 100 characters
GREEDY_PROMPT = "ANNA:\n"
BATCH_PROMPTS = [
    "",
    "A",
    "É",
    "CÉLINE:\nThe café",
    "a naïve ",
    "My lord is near!\n\nDMITRI:\n",
    "§ the ☃ king",
    "ÉLODIE:\nThe garden seems sweet.\n" * 3,
]
SEED = 1234
STRATEGIES = [
    dict(temperature=1.2, top_k=5),
    dict(temperature=1.0, top_p=0.8),
    dict(temperature=0.0, repetition_penalty=1.5),
    dict(temperature=1.0, stop="\n"),
    dict(temperature=1.0, top_k=10, top_p=0.9, repetition_penalty=1.3, stop="e"),
    dict(temperature=[0.2, 0.6, 1.4]),
]

# Run in a fresh interpreter where importing keras_chargen fails, as on a host without it installed.
LOADER = r"""
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "keras_chargen":
            raise ImportError(f"{name} is blocked in this process")
        return None

sys.meta_path.insert(0, Blocked())
import numpy as np
import tensorflow as tf

args = json.loads(sys.argv[1])
first, second = tf.saved_model.load(args["path"]), tf.saved_model.load(args["path"])

def serve(model, prompts, temperature, lengths, seed, top_k=0, top_p=1.0, repetition_penalty=1.0, stop=""):
    n = len(prompts)
    out = model.signatures["serving_default"](
        prompt=tf.constant(prompts), temperature=tf.broadcast_to(tf.constant(temperature, tf.float32), [n]),
        max_new_chars=tf.constant(lengths, tf.int32), seed=tf.constant([seed], tf.int32),
        top_k=tf.fill([n], top_k), top_p=tf.fill([n], float(top_p)),
        repetition_penalty=tf.fill([n], float(repetition_penalty)), stop=tf.fill([n], stop))
    return {k: [s.decode("utf-8") for s in v.numpy()] if v.dtype == tf.string else v.numpy().tolist()
            for k, v in out.items()}

step, encode, decode = (first.signatures[k] for k in ("step", "encode", "decode"))
specs = step.structured_input_signature[1]
names = [n for n in specs if n != "ids"]
zeros = {n: tf.zeros([1, specs[n].shape[1]]) for n in names}

states, logits = dict(zeros), []
for i in args["parity_ids"]:
    out = step(ids=tf.constant([i]), **states)
    logits.append(out["logits"].numpy()[0])
    states = {n: out[n] for n in names}
np.save(args["logits_file"], np.stack(logits))

encoded = encode(prompt=tf.constant([args["greedy_prompt"]]))
states, generated = dict(zeros), []
for i in encoded["ids"].numpy()[0][: int(encoded["lengths"].numpy()[0])]:
    out = step(ids=tf.constant([int(i)]), **states)
    states = {n: out[n] for n in names}
for _ in range(args["greedy_chars"]):
    scores = out["logits"].numpy()[0]
    scores[0] = -np.inf
    generated.append(int(np.argmax(scores)))
    out = step(ids=tf.constant([generated[-1]]), **states)
    states = {n: out[n] for n in names}
roundtrip = encode(prompt=tf.constant(args["batch_prompts"]))

print(json.dumps({
    "signatures": sorted(first.signatures.keys()),
    "step_outputs": sorted(step.structured_outputs),
    "serving_inputs": sorted(first.signatures["serving_default"].structured_input_signature[1]),
    "greedy_serving": serve(first, [args["greedy_prompt"]], 0.0, [args["greedy_chars"]], 0)["generated"][0],
    "greedy_step_loop": decode(ids=tf.constant([generated]))["text"].numpy()[0].decode("utf-8"),
    "seeded_first": serve(first, [args["greedy_prompt"]] * 2, 1.0, [80, 80], args["seed"]),
    "seeded_second": serve(second, [args["greedy_prompt"]] * 2, 1.0, [80, 80], args["seed"]),
    "seeded_other": serve(second, [args["greedy_prompt"]] * 2, 1.0, [80, 80], args["seed"] + 1),
    "batch": serve(first, args["batch_prompts"], 0.0, args["batch_lengths"], 0),
    "strategies": [serve(first, [args["greedy_prompt"]] * 3, kwargs.pop("temperature"), [80] * 3, args["seed"],
                         **kwargs)["generated"] for kwargs in args["strategies"]],
    "roundtrip": [s.decode("utf-8") for s in decode(ids=roundtrip["ids"])["text"].numpy()],
    "roundtrip_lengths": roundtrip["lengths"].numpy().tolist(),
    "imported": sorted(m for m in sys.modules if m.split(".")[0] == "keras_chargen"),
}))
"""


@pytest.fixture(scope="module")
def savedmodel_dir(trained_dir, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("exported") / "tiny"
    paths = export_model(trained_dir, base, "savedmodel", version=3)
    assert paths == [base / "3"]
    return paths[0]


@pytest.fixture(scope="module")
def reloaded(savedmodel_dir, generator, tmp_path_factory) -> dict:
    """What the SavedModel answers in a separate process that cannot import keras_chargen or Keras."""
    vocab = Vocabulary(generator.vocabulary)
    logits_file = tmp_path_factory.mktemp("reloaded") / "logits.npy"
    args = {
        "path": str(savedmodel_dir),
        "logits_file": str(logits_file),
        "greedy_prompt": GREEDY_PROMPT,
        "greedy_chars": 200,
        "parity_ids": vocab.encode(PARITY_PROMPT)[:100].tolist(),
        "seed": SEED,
        "strategies": STRATEGIES,
        "batch_prompts": BATCH_PROMPTS,
        "batch_lengths": [5 * (i + 1) for i in range(len(BATCH_PROMPTS))],
    }
    assert len(args["parity_ids"]) == 100 and min(args["parity_ids"]) > 0
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["logits"] = np.load(logits_file)
    return result | {"args": args}


def test_savedmodel_loads_without_keras_chargen_and_has_the_signatures(reloaded, savedmodel_dir, trained_dir):
    assert reloaded["imported"] == []
    assert reloaded["signatures"] == sorted(contract.SIGNATURES)
    assert reloaded["signatures"] == [
        "decode",
        "decode_chunk",
        "decode_start",
        "encode",
        "explain_sampling",
        "inspect",
        "serving_default",
        "step",
    ]
    assert reloaded["step_outputs"] == ["c_0", "h_0", "logits"]
    assert reloaded["serving_inputs"] == [
        "max_new_chars",
        "prompt",
        "repetition_penalty",
        "seed",
        "stop",
        "temperature",
        "top_k",
        "top_p",
    ]
    asset = savedmodel_dir / "assets" / "vocab.json"
    assert asset.read_text("utf-8") == (trained_dir / "vocab.json").read_text("utf-8")


def test_savedmodel_step_matches_keras_over_100_steps(reloaded, generator):
    expected = keras_step_logits(generator, reloaded["args"]["parity_ids"])
    assert reloaded["logits"].shape == expected.shape == (100, len(generator.vocabulary) + 1)
    assert np.abs(reloaded["logits"] - expected).max() <= 1e-4


def test_savedmodel_greedy_text_matches_keras(reloaded, generator):
    expected = generator.generate([GREEDY_PROMPT], 0.0, 200)[0]
    assert len(expected) == 200
    assert reloaded["greedy_serving"] == expected
    assert reloaded["greedy_step_loop"] == expected


def test_savedmodel_seeded_sampling_reproduces_across_reloads(reloaded, generator):
    first, second, other = reloaded["seeded_first"], reloaded["seeded_second"], reloaded["seeded_other"]
    assert first["generated"] == second["generated"]
    assert first["seed"] == [SEED, SEED + 1]  # one seed for two rows: row i draws with seed + i
    assert first["generated"] == generator.generate([GREEDY_PROMPT] * 2, 1.0, 80, seed=SEED)  # as in Keras
    first, other = first["generated"], other["generated"]
    assert other != first
    assert first[0] != first[1]  # the rows of one batch are independent samples


def test_savedmodel_gives_the_seeded_in_process_output_for_each_strategy(reloaded, generator):
    for kwargs, served in zip(STRATEGIES, reloaded["strategies"]):
        expected = generator.generate([GREEDY_PROMPT] * 3, max_new_chars=80, seed=SEED, **kwargs)
        assert served == expected, kwargs
        if "stop" in kwargs:
            assert all(text.endswith(kwargs["stop"]) or len(text) == 80 for text in served)
            assert any(len(text) < 80 for text in served)


def test_savedmodel_answers_a_batch_of_8_ragged_non_ascii_prompts(reloaded, generator):
    batch, lengths = reloaded["batch"], reloaded["args"]["batch_lengths"]
    assert len(batch["generated"]) == 8
    for prompt, length, generated, text in zip(BATCH_PROMPTS, lengths, batch["generated"], batch["text"]):
        assert generated == generator.generate([prompt], 0.0, length, oov="skip")[0]
        assert text == prompt + generated


def test_savedmodel_encode_decode_round_trip(reloaded, generator):
    vocab = Vocabulary(generator.vocabulary)
    expected = ["".join(c for c in p if vocab.token_id(c)) or "\n" for p in BATCH_PROMPTS]
    assert reloaded["roundtrip"] == expected
    assert reloaded["roundtrip_lengths"] == [len(t) for t in expected]


def test_layout_puts_each_format_in_its_own_version_folder(tmp_path):
    assert artifact_dir(tmp_path, "savedmodel", 2) == tmp_path / "2"
    assert artifact_dir(tmp_path, "tflite", 2) == tmp_path / "tflite" / "2"
    assert artifact_dir(tmp_path, "tflite", 2, "dynamic") == tmp_path / "tflite-dynamic" / "2"
    assert artifact_dir(tmp_path, "tflite", 2, "float16") == tmp_path / "tflite-float16" / "2"
    assert artifact_dir(tmp_path, "onnx", 2) == tmp_path / "onnx" / "2"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(format="pytorch"), "unknown format 'pytorch'; choose one of savedmodel, tflite, onnx, web, all"),
        (dict(version=0), "version must be an integer from 1 to 9223372036854775807 .TF Serving.s int64.; got 0"),
        (dict(version="1"), "version must be an integer from 1 to 9223372036854775807 .TF Serving.s int64.; got .1."),
        (dict(quantize="int4", format="tflite"), "quantize must be one of none, dynamic, float16"),
        (dict(quantize="dynamic", format="onnx"), "--quantize applies to TFLite only"),
    ],
)
def test_bad_export_arguments(trained_dir, tmp_path, kwargs, message):
    with pytest.raises(ChargenError, match=message):
        export_model(trained_dir, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_missing_model_dir(tmp_path):
    with pytest.raises(ChargenError, match="model directory not found"):
        export_model(tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_version_needs_overwrite(savedmodel_dir, trained_dir):
    before = (savedmodel_dir / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(ChargenError, match=r"3 already exists; pass --overwrite"):
        export_model(trained_dir, savedmodel_dir.parent, "savedmodel", version=3)
    with pytest.raises(ChargenError, match="already exists"):
        export_model(trained_dir, savedmodel_dir.parent, "all", version=3)  # checked before anything is written
    assert not (savedmodel_dir.parent / "tflite").exists()
    assert (savedmodel_dir / "saved_model.pb").stat().st_mtime_ns == before


def test_overwrite_replaces_the_version(generator, trained_dir, tmp_path):
    path = tmp_path / "base" / "1"
    path.mkdir(parents=True)
    (path / "stale.txt").write_text("old")
    assert export_savedmodel(generator, path, trained_dir / "vocab.json", overwrite=True) == path
    assert (path / "saved_model.pb").is_file() and not (path / "stale.txt").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["1"]  # no temp or old folders left


@pytest.mark.parametrize("overwrite", [False, True])
def test_interrupted_export_leaves_no_partial_version(trained_dir, tmp_path, monkeypatch, overwrite):
    from keras_chargen.export import tflite

    def write_half_then_die(generator, directory, vocab_file, quantize):
        (Path(directory) / "step.tflite").write_bytes(b"half")
        raise KeyboardInterrupt

    base = tmp_path / "base"
    if overwrite:
        (base / "1").mkdir(parents=True)
        (base / "1" / "old.txt").write_text("previous version")
    monkeypatch.setattr(tflite, "write_tflite", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        export_model(trained_dir, base, "all", version=1, overwrite=overwrite)  # SavedModel first, then TFLite dies
    if overwrite:
        assert sorted(str(p.relative_to(base)) for p in base.rglob("*")) == ["1", "1/old.txt"]
    else:
        assert not base.exists()  # not even the folders created for the temp dirs


def test_staged_dirs_commit_all_or_nothing(tmp_path):
    targets = [tmp_path / "1", tmp_path / "tflite" / "1"]
    with pytest.raises(RuntimeError), staged_dirs(targets) as temps:
        for tmp in temps:
            (tmp / "f").write_text("x")
        raise RuntimeError("conversion failed")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []
    with staged_dirs(targets) as temps:
        for tmp in temps:
            (tmp / "f").write_text("x")
    assert all((t / "f").read_text() == "x" for t in targets)


def test_cli_export_errors_and_success(trained_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(trained_dir), "--out", str(out), "--format", "savedmodel", "--version", "2"]) == 0
    assert f"exported {out / '2'}" in capsys.readouterr().out
    assert main(["export", str(trained_dir), "--out", str(out), "--version", "2"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--out", str(out), "--version", "5"]) == 2
    assert "model directory not found" in capsys.readouterr().err
    assert main(["export", str(trained_dir), "--out", str(out), "--quantize", "dynamic"]) == 2
    assert "--quantize applies to TFLite only" in capsys.readouterr().err


def test_version_directories_get_normal_permissions(trained_dir, tmp_path):
    from keras_chargen.io import default_mode

    (path,) = export_model(trained_dir, tmp_path / "perm", "savedmodel")
    assert path.stat().st_mode & 0o777 == default_mode(directory=True)  # not mkdtemp's 0700
