r"""The fixed-shape generator for devices and native programs: `generate_fixed.tflite` and its manifest.

LiteRT's C API (the compiled model of `libLiteRt.so`, also under the Kotlin and Swift APIs) allocates
each output from the shape the model states before it runs: it cannot return `generate`'s
`ids [batch, max_new_chars]`, whose size depends on an input value (measured: the buffer stays
unwritten, and a buffer sized for the result is refused). `generate_fixed` is `generate` with static
shapes (`contract.FIXED_SHAPES`): batch 1, the prompt right-padded to P ids, `ids` always `[1, N]`
(0 after `max_new_chars` ids or a stop), up to `stops` stop sequences of `stop` ids. Inside, the
prompt is cut to its last non-zero id before priming, so the padding costs nothing and the ids are
those of `generate` for the same inputs.

The manifest (`generate_fixed.txt`) is one item per line, so that C reads it without a JSON parser:
`key value` lines, then `tokens N` and N tokens (id 1 first), and for a word-level model the tables
its tokenizer needs (RE2's Unicode classes as TensorFlow applies them, computed here with the very
ops the SavedModel runs) and, if it lowercases, the lowercase mapping. Tokens and strings are
escaped: `\\`, `\n`, `\r` and `\xHH` for the other control bytes. examples/c/chargen.c reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_chargen import contract
from keras_chargen.export.id_generator import IdGenerator
from keras_chargen.generation import CharGenerator, with_parameters
from keras_chargen.io import atomic_write_text
from keras_chargen.settings import BY_NAME
from keras_chargen.tokenizer import NO_SPACE_AFTER, NO_SPACE_BEFORE, WORD_CHARS

SPACES = r"[\t\f\r\v\pZ]"  # what `tokenizer.split_words` turns into a separator


def fixed_specs() -> list[tf.TensorSpec]:
    """The `generate` inputs (`contract.GENERATE`) with the static shapes of `contract.FIXED_SHAPES`."""
    sizes = contract.FIXED_SHAPES
    shapes = {"prompt_ids": [1, sizes["prompt"]], "stop_ids": [1, sizes["stops"], sizes["stop"]]}
    dtypes = {"float32": tf.float32, "int32": tf.int32}
    specs = []
    for tensor in contract.GENERATE.inputs:
        shape = shapes.get(tensor.name, [1] * len(tensor.shape))
        specs.append(tf.TensorSpec(shape, dtypes[tensor.dtype], name=tensor.name))
    return specs


def fixed_generate(ids: IdGenerator) -> Callable[..., dict[str, tf.Tensor]]:
    """`generate` on the fixed shapes: `{"ids": [1, N] int32, "seed": [1] int32}`."""
    new = contract.FIXED_SHAPES["new"]

    def generate(prompt_ids: tf.Tensor, *values: tf.Tensor) -> dict[str, tf.Tensor]:
        positions = tf.range(1, tf.shape(prompt_ids)[1] + 1)[None, :] * tf.cast(prompt_ids != 0, tf.int32)
        width = tf.maximum(tf.reduce_max(positions), 1)  # up to the last non-zero id: padding is not primed on
        out = ids.generate(prompt_ids[:, :width], *values)
        padded = tf.pad(out["ids"], tf.stack([[0, 0], [0, new - tf.shape(out["ids"])[1]]]))
        return {"ids": tf.reshape(padded, [1, new]), "seed": tf.reshape(out["seed"], [1])}

    return generate


def add_fixed_endpoint(archive: keras.export.ExportArchive, generator: CharGenerator) -> None:
    """Add `contract.FIXED_SIGNATURE` to an `IdGenerator.archive()` (converted with the other endpoints)."""
    specs = fixed_specs()
    fn = with_parameters(fixed_generate(IdGenerator(generator)), specs)
    archive.add_endpoint(contract.FIXED_SIGNATURE, fn, input_signature=specs)


def escape(text: str) -> str:
    """A manifest value: `\\`, newline, carriage return and other control bytes escaped; the rest as UTF-8."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def code_point_ranges(mask: np.ndarray, code_points: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive `(first, last)` runs of the code points where `mask` holds (`code_points` ascending)."""
    picked = code_points[mask]
    if picked.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(picked) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [picked.size - 1]])
    return [(int(picked[s]), int(picked[e])) for s, e in zip(starts, ends)]


def word_tables(lowercase: bool) -> list[str]:
    """The manifest lines of the word tokenizer's classes (and lowercase mapping), from the TF ops it runs."""
    code_points = np.array([c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF], np.int32)
    chars = tf.strings.unicode_encode(tf.constant(code_points[:, None]), "UTF-8")
    lines = []
    for name, pattern in (("word_chars", rf"[{WORD_CHARS}]"), ("spaces", SPACES)):
        ranges = code_point_ranges(tf.strings.regex_full_match(chars, pattern).numpy(), code_points)
        lines += [f"{name} {len(ranges)}", *(f"{a:x} {b:x}" for a, b in ranges)]
    if lowercase:
        lowered = tf.strings.lower(chars, encoding="utf-8").numpy()
        changed = [(int(c), low.decode()) for c, s, low in zip(code_points, chars.numpy(), lowered) if low != s]
        lines += [f"lower {len(changed)}", *(f"{c:x} {escape(low)}" for c, low in changed)]
    return lines


def manifest_lines(generator: CharGenerator, inputs: Sequence[str]) -> list[str]:
    """The manifest of `generate_fixed.tflite` for `generator` (see the module docstring)."""
    header = {
        "model": contract.NATIVE_FILES["generate_fixed"],
        "signature": contract.FIXED_SIGNATURE,
        "level": generator.level,
        "lowercase": int(bool(generator.lowercase)),
        "start_id": generator.start_id,
        "document_start": generator.document_start or 0,
        "document_end": generator.document_end or 0,
        **contract.FIXED_SHAPES,
        "no_space_before": escape("".join(sorted(NO_SPACE_BEFORE))),
        "no_space_after": escape("".join(sorted(NO_SPACE_AFTER))),
    }
    lines = [contract.NATIVE_FORMAT, *(f"{key} {value}" for key, value in header.items())]
    for name in inputs:  # every input, so that a setting added later still gets its off value
        off = BY_NAME[name].off if name in BY_NAME and BY_NAME[name].dtype != "string" else "-"
        lines.append(f"input {name} {off}")
    lines += [f"tokens {len(generator.vocabulary)}", *(escape(t) for t in generator.vocabulary)]
    if generator.level == "word":
        lines += word_tables(generator.lowercase)
    return [*lines, "end"]


def write_native(model: bytes, directory: str | Path, generator: CharGenerator) -> list[Path]:
    """Write `model` (the archive's fixed endpoint, converted) into `directory` and the manifest beside it."""
    directory = Path(directory)
    model_path = directory / contract.NATIVE_FILES["generate_fixed"]
    manifest_path = directory / contract.NATIVE_FILES["manifest"]
    model_path.write_bytes(model)
    inputs: Iterable[str] = contract.GENERATE.input_names
    atomic_write_text(manifest_path, "\n".join(manifest_lines(generator, list(inputs))) + "\n")
    return [model_path, manifest_path]
