"""ONNX export via tf2onnx: `step.onnx` and `generate.onnx` (ids in, ids out), vocabulary beside and inside.

ONNX has no string ops, so the graphs work on ids; the vocabulary is `vocab.json` beside the
files and the `vocabulary` entry of each model's `metadata_props`. ONNX tensor names are global,
so an output named like an input gets the prefix `new_` (`contract.onnx_output_name`): the step's new
states are `new_h_0, new_c_0, …` (inputs `h_0, c_0, …`), the generator's seeds `new_seed`.

Both files come from one Keras `ExportArchive` SavedModel, converted signature by signature (as
`python -m tf2onnx.convert --saved-model DIR --signature_def NAME` does): converting the traced
function directly (`from_function`) gave the generator a stray `while/input_N` input for a
captured constant. The generator draws with the counter-based generator of
`keras_chargen.sampling` (integer ops only; opset 18 for `BitwiseXor`), so the same seed gives the
same ids as the SavedModel and TFLite, in every session.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from keras_chargen import contract
from keras_chargen.export.id_generator import IdGenerator
from keras_chargen.generation import CharGenerator

OPSET = 18  # BitwiseXor


def convert_signature(saved_model_dir: str | Path, signature: str, metadata: dict[str, str]):
    """Convert one signature of a SavedModel to an `onnx.ModelProto`, with `metadata` in `metadata_props`.

    Input names are the signature's input names, output names its output keys.
    """
    import tf2onnx
    from tf2onnx import tf_loader

    with _quiet_tf_warnings():
        graph_def, inputs, outputs, tensors_to_rename = tf_loader.from_saved_model(
            str(saved_model_dir), None, None, "serve", [signature], return_tensors_to_rename=True
        )
        with tf.Graph().as_default():
            model, _ = tf2onnx.convert.from_graph_def(
                graph_def, input_names=inputs, output_names=outputs, opset=OPSET, tensors_to_rename=tensors_to_rename
            )
    fix_loop_inputs(model.graph)
    unseed_random_ops(model.graph)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    return model


def fix_loop_inputs(graph) -> int:
    """Give every `Loop` body's iteration-number and condition inputs a (scalar) shape; returns how many.

    tf2onnx leaves them without one, and onnxruntime refuses such a Loop inside an `If` ("Loop
    subgraph input 0 has unknown shape"): the generator's lean and general loops sit in one.
    """
    fixed = 0
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                if node.op_type == "Loop":
                    for value in subgraph.input[:2]:
                        if not value.type.tensor_type.HasField("shape"):
                            value.type.tensor_type.shape.SetInParent()  # rank 0
                            fixed += 1
                fixed += fix_loop_inputs(subgraph)
    return fixed


def unseed_random_ops(graph) -> int:
    """Drop the fixed `seed` tf2onnx writes on random ops (every session would draw the same "random" seeds);
    returns how many. Unseeded, onnxruntime seeds them once per process (`onnxruntime.set_seed` sets it)."""
    dropped = 0
    for node in graph.node:
        if node.op_type in ("RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial"):
            for attribute in [a for a in node.attribute if a.name == "seed"]:
                node.attribute.remove(attribute)
                dropped += 1
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                dropped += unseed_random_ops(subgraph)
    return dropped


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


def onnx_metadata(ids: IdGenerator, vocab_file: str | Path) -> dict[str, str]:
    """The `metadata_props` every ONNX file of a version carries: vocabulary, state names, start id."""
    return {
        contract.ONNX_VOCABULARY: Path(vocab_file).read_text(encoding="utf-8"),
        contract.ONNX_STATE_NAMES: json.dumps(ids.state_names),
        contract.ONNX_START_ID: str(ids.generator.start_id),
    }


def write_onnx(generator: CharGenerator, directory: str | Path, vocab_file: str | Path) -> list[Path]:
    """Write `step.onnx`, `generate.onnx` and `vocab.json` into the (existing) `directory`."""
    directory = Path(directory)
    ids = IdGenerator(generator, onnx_names=True)
    metadata = onnx_metadata(ids, vocab_file)
    with tempfile.TemporaryDirectory() as tmp:
        ids.archive().write_out(tmp, verbose=False)
        for endpoint, name in contract.ONNX_FILES.items():
            model = convert_signature(tmp, endpoint, metadata)
            (directory / name).write_bytes(model.SerializeToString())
    shutil.copyfile(vocab_file, directory / contract.VOCAB_FILE)
    return [directory / name for name in (*contract.ONNX_FILES.values(), contract.VOCAB_FILE)]
