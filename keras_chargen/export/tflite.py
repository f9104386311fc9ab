"""TFLite export: `step.tflite` and `generate.tflite`, builtin ops only, vocabulary beside and inside; and
`generate_fixed.tflite` with its manifest for devices and native programs (`keras_chargen.export.native`).

Both files come from one Keras `ExportArchive` SavedModel (see `IdGenerator.archive` for why not
`tf.saved_model.save`). Strings stay out of the files (string ops are not TFLite builtins): the
vocabulary ships as `vocab.json` beside them and inside each file twice, as the TFLite metadata
entry `vocab.json` (flatbuffer `Model.metadata`, readable from C++ / Swift) and as a TFLite
Support associated file (a zip appended to the flatbuffer: `zipfile.ZipFile("step.tflite")`,
Android's `MetadataExtractor.getAssociatedFile("vocab.json")`).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import tensorflow as tf

from keras_chargen.contract import FIXED_SIGNATURE, TFLITE_FILES, TFLITE_VOCAB_METADATA, VOCAB_FILE
from keras_chargen.errors import ChargenError
from keras_chargen.export.id_generator import IdGenerator
from keras_chargen.export.layout import QUANTIZATIONS
from keras_chargen.export.native import add_fixed_endpoint, write_native
from keras_chargen.generation import CharGenerator


def convert_endpoint(saved_model_dir: str | Path, endpoint: str, quantize: str = "none") -> bytes:
    """Convert one signature of an `ExportArchive` SavedModel to a builtins-only TFLite flatbuffer.

    Args:
        saved_model_dir: str | Path, written by `IdGenerator.archive().write_out`.
        endpoint: str, "step" or "generate".
        quantize: str, "none" (float32), "dynamic" (int8 weights, float compute) or "float16".
    """
    if quantize not in QUANTIZATIONS:
        raise ChargenError(f"quantize must be one of {', '.join(QUANTIZATIONS)}; got {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[endpoint])
    # builtins only: the stock mobile runtime has no Flex (select TF ops) delegate
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    model = converter.convert()
    custom = custom_ops(model)
    if custom:
        raise ChargenError(f"{endpoint}.tflite would need non-builtin ops {', '.join(custom)}")
    return model


def _read_model(model: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(model))


def op_names(model: bytes) -> set[str]:
    """Names of the operators a TFLite flatbuffer uses (builtin names, or the custom op names)."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    names = set()
    for opcode in _read_model(model).operatorCodes:
        code = max(opcode.builtinCode, opcode.deprecatedBuiltinCode)  # newer codes live in builtinCode only
        if code == schema.BuiltinOperator.CUSTOM:
            names.add(opcode.customCode.decode() if isinstance(opcode.customCode, bytes) else str(opcode.customCode))
        else:
            names.add(builtin[code])
    return names


def custom_ops(model: bytes) -> list[str]:
    """The non-builtin ops (Flex or custom) a TFLite flatbuffer needs; empty for the stock runtime."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = set(vars(schema.BuiltinOperator))
    return sorted(name for name in op_names(model) if name not in builtin)


def embed_vocabulary(model: bytes, vocab_json: bytes) -> bytes:
    """Add `vocab_json` as the metadata entry `vocab.json` and as an associated file (appended zip)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    obj = _read_model(model)
    buffer = schema.BufferT()
    buffer.data = list(vocab_json)
    obj.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_VOCAB_METADATA, len(obj.buffers) - 1
    obj.metadata = [*(obj.metadata or []), entry]
    flat = flatbuffer_utils.convert_object_to_bytearray(obj)
    with tempfile.SpooledTemporaryFile() as tmp:
        tmp.write(flat)
        with zipfile.ZipFile(tmp, "a") as archive:  # not a zip yet: Python appends one after the flatbuffer
            archive.writestr(TFLITE_VOCAB_METADATA, vocab_json)
        tmp.seek(0)
        return tmp.read()


def read_metadata(model: bytes, name: str = TFLITE_VOCAB_METADATA) -> bytes:
    """The bytes of a named metadata entry of a TFLite flatbuffer."""
    obj = _read_model(model)
    for entry in obj.metadata or []:
        entry_name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if entry_name == name:
            return bytes(obj.buffers[entry.buffer].data)
    raise ChargenError(f"no metadata entry {name!r} in this TFLite model")


def write_tflite(
    generator: CharGenerator, directory: str | Path, vocab_file: str | Path, quantize: str = "none"
) -> list[Path]:
    """Write `step.tflite`, `generate.tflite` and `vocab.json` into the (existing) `directory`."""
    directory = Path(directory)
    vocab_json = Path(vocab_file).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        archive = IdGenerator(generator).archive()
        add_fixed_endpoint(archive, generator)
        archive.write_out(tmp, verbose=False)
        for endpoint, name in TFLITE_FILES.items():
            model = convert_endpoint(tmp, endpoint, quantize)
            (directory / name).write_bytes(embed_vocabulary(model, vocab_json))
        native = write_native(convert_endpoint(tmp, FIXED_SIGNATURE, quantize), directory, generator)
    shutil.copyfile(vocab_file, directory / VOCAB_FILE)
    return [*(directory / name for name in (*TFLITE_FILES.values(), VOCAB_FILE)), *native]
