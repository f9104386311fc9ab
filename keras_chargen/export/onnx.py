"""ONNX export via tf2onnx: `step.onnx` and `generate.onnx` (ids in, ids out), vocabulary beside and inside.

ONNX has no string ops, so the graphs work on ids; the vocabulary is `vocab.json` beside the
files and the `vocabulary` entry of each model's `metadata_props`. ONNX tensor names are global,
so the step's new states are named `new_h_0, new_c_0, …` (inputs `h_0, c_0, …`).

Seeding: tf2onnx writes `seed=0.0` on the Multinomial node, which makes every new session draw the
same sequence; the exporter removes the attribute, so draws come from onnxruntime's generator:
`onnxruntime.set_seed(n)` before creating the session reproduces a sample.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import tensorflow as tf

from keras_chargen.export.id_generator import IdGenerator
from keras_chargen.generation import CharGenerator

ONNX_FILES = {"step": "step.onnx", "generate": "generate.onnx"}
VOCAB_NAME = "vocab.json"
OPSET = 17
STATE_OUTPUT_PREFIX = "new_"


def convert_function(function, input_signature: list[tf.TensorSpec], metadata: dict[str, str]):
    """Convert a Python function over tensors to an `onnx.ModelProto`, with `metadata` in `metadata_props`.

    Input names come from the specs' names, output names from the keys of the returned dict.
    """
    import tf2onnx

    traced = tf.function(function, input_signature=input_signature)
    with _quiet_tf_warnings():
        model, _ = tf2onnx.convert.from_function(traced, input_signature=input_signature, opset=OPSET)
    unseed_multinomial(model.graph)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    return model


@contextlib.contextmanager
def _quiet_tf_warnings():
    """Hide TF's harmless 'Issue encountered when serializing table_initializer' warnings of tf2onnx's freezing."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def unseed_multinomial(graph) -> int:
    """Remove the fixed `seed` attribute of every Multinomial node (also inside Loop bodies); returns how many."""
    removed = 0
    for node in graph.node:
        if node.op_type == "Multinomial":
            kept = [a for a in node.attribute if a.name != "seed"]
            removed += len(node.attribute) - len(kept)
            del node.attribute[:]
            node.attribute.extend(kept)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                removed += unseed_multinomial(attribute.g)
            for subgraph in attribute.graphs:
                removed += unseed_multinomial(subgraph)
    return removed


def write_onnx(generator: CharGenerator, directory: str | Path, vocab_file: str | Path) -> list[Path]:
    """Write `step.onnx`, `generate.onnx` and `vocab.json` into the (existing) `directory`."""
    directory = Path(directory)
    ids = IdGenerator(generator, state_output_prefix=STATE_OUTPUT_PREFIX)
    metadata = {
        "vocabulary": Path(vocab_file).read_text(encoding="utf-8"),
        "state_names": json.dumps(ids.state_names),
        "start_id": str(generator.start_id),
    }
    functions = {"step": (ids.step, ids.step_signature()), "generate": (ids.generate, ids.generate_signature())}
    for endpoint, name in ONNX_FILES.items():
        model = convert_function(*functions[endpoint], metadata)
        (directory / name).write_bytes(model.SerializeToString())
    shutil.copyfile(vocab_file, directory / VOCAB_NAME)
    return [directory / name for name in (*ONNX_FILES.values(), VOCAB_NAME)]
