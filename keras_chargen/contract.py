"""The exported artifact, named once: its files, assets, signatures (inputs and outputs) and state order.

Standard library only. The exporters (`keras_chargen.export`), the reference runtimes
(`keras_chargen.export.runtimes`), the server (`keras_chargen.serving`) and the docs tables read it;
every setting input is derived from `keras_chargen.settings.SETTINGS`, so adding a setting changes
every signature at once. A signature is a `Signature`: a name and `Tensor`s in and out. Adding one
is one entry in `SIGNATURES` (and its function in the exporter); `markdown_table` prints them.

Seeds, on every runtime (SavedModel, Python API, `generate.tflite`, `generate.onnx`, `:stream`, the web
export's `decode.onnx`):
a seed in 0..2**31-1 gives the same ids everywhere; one seed for several rows seeds row i with
(seed + i) mod 2**31; a negative seed makes the runtime draw a seed in 0..2**31-1 for that row
itself (TF's random op, TFLite's builtin RANDOM_UNIFORM, ONNX RandomUniformLike), and every
generating signature returns the seed each row used (`seed`; `new_seed` in ONNX, whose tensor
names are global), so a random draw can be reproduced.

Stop sequences, on every runtime: `stop_ids` int32 `[batch, n, s]` holds n sequences per row, each
right-padded with 0 (an all-zero sequence is unused; a 0 before a sequence's last non-zero id
never matches, as id 0 is never generated); a row stops once its generated ids end with one of its
sequences, which is then part of the output. A stop string is the sequence of its tokens (the
codec of the level splits it as it splits prompts; one with a token outside the vocabulary can
never match, so it is unused). At the character level that is exactly "the generated text ends with
the string"; at the word level the match is on whole tokens (see docs/export.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from keras_chargen.settings import MAX_NEW_CHARS, SETTINGS, Setting

DEFAULT_SIGNATURE = "serving_default"  # what TF Serving runs when a request names no signature

# --- files ---
VOCAB_FILE = "vocab.json"  # the vocabulary: in the model directory, SavedModel assets/, beside TFLite/ONNX files
GENERATION_FILE = "generation.json"  # SavedModel assets/: level, lowercase, document markers, start id
ASSETS_DIR = "assets"  # the SavedModel's asset folder
TFLITE_FILES = {"step": "step.tflite", "generate": "generate.tflite"}
ONNX_FILES = {"step": "step.onnx", "generate": "generate.onnx"}
# The fixed-shape generator for devices and the native example (examples/c), beside the TFLite files: the C API's
# compiled model cannot return an output whose size depends on an input value, so `generate_fixed` has static
# shapes (`FIXED_SHAPES`), and a line-based manifest (vocabulary, level, shapes, inputs) that C reads easily.
NATIVE_FILES = {"generate_fixed": "generate_fixed.tflite", "manifest": "generate_fixed.txt"}
FIXED_SIGNATURE = "generate_fixed"  # the signature key inside generate_fixed.tflite
NATIVE_FORMAT = "chargen-native 1"  # the manifest's first line
FIXED_SHAPES = {  # batch 1; the prompt right-padded to `prompt` ids, `stops` stop sequences of `stop` ids each
    "prompt": 4096,
    "new": MAX_NEW_CHARS,  # `ids` is [1, new]: 0 after max_new_chars ids or a stop
    "stops": 4,
    "stop": 64,
}
# The web export (`keras-chargen export --format web`): a static folder a browser runs on onnxruntime-web
WEB_DECODE = "decode.onnx"  # the `DECODE` signature: a stream on ids, a chunk of tokens per call
WEB_MANIFEST = "chargen.json"  # what chargen.js needs besides the vocabulary: level, states, settings, files
WEB_MODULE, WEB_PAGE = "chargen.js", "index.html"  # the ES module and the page that uses it
WEB_RUNTIME_DIR = "ort"  # onnxruntime-web's files, copied from web/node_modules at export time
# the WebAssembly build chargen.js imports, and the two files it loads itself (no WebGPU/WebGL)
WEB_RUNTIME_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
TFLITE_VOCAB_METADATA = VOCAB_FILE  # the flatbuffer metadata entry and the associated file holding vocab.json
# ONNX `metadata_props` keys: vocab.json's text, the state names (JSON list), the start id
ONNX_VOCABULARY, ONNX_STATE_NAMES, ONNX_START_ID = "vocabulary", "state_names", "start_id"
ONNX_OUTPUT_PREFIX = "new_"  # ONNX names are global: an output named like an input gets this prefix
GENERATION_KEYS = ("level", "lowercase", "document_start", "document_end", "start_id")  # generation.json


def asset(name: str) -> str:
    """The path of an asset inside a SavedModel version folder, e.g. `assets/vocab.json`."""
    return f"{ASSETS_DIR}/{name}"


# --- the recurrent states ---
STATES = "*states*"  # placeholder in a signature: one float32 `[batch, units]` tensor per state, `h_0, c_0, h_1, …`


def state_names(kinds_per_layer: Sequence[int]) -> list[str]:
    """`h_0, c_0, h_1, …`: per layer `h` (and `c` for a 2-state cell such as the LSTM), layers in order."""
    return [f"{kind}_{layer}" for layer, kinds in enumerate(kinds_per_layer) for kind in ("h", "c")[:kinds]]


def state_order(names: Iterable[str]) -> list[str]:
    """State names in the step's order (layer by layer, `h` before `c`), e.g. from a signature's input names."""
    return sorted(names, key=lambda n: (int(n.split("_")[1]), n[0] != "h"))


def is_state(name: str) -> bool:
    """Whether an input or output name is a recurrent state (`h_0`, `c_1`, …)."""
    kind, _, layer = name.partition("_")
    return kind in ("h", "c") and layer.isdigit()


# --- tensors and signatures ---
@dataclass(frozen=True)
class Tensor:
    """One input or output: name, dtype ("float32", "int32", "bool", "string"), shape (None = any size), meaning."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    meaning: str = ""


@dataclass(frozen=True)
class Signature:
    """A named function of an artifact: its inputs and outputs (`STATES` stands for the recurrent states)."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    meaning: str = ""

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


BATCH = (None,)
STATE_TENSOR = Tensor(
    STATES, "float32", (None, None), "one per recurrent state, `h_0`, `c_0`, `h_1`, … `[batch, units]`"
)


def setting_tensor(spec: Setting, shape: tuple[int | None, ...] = BATCH) -> Tensor:
    """A setting as a string-level input (SavedModel, REST): its own name and dtype, one value per row."""
    return Tensor(spec.name, spec.dtype, shape, spec.meaning)


# The id-level form of the string settings (TFLite, ONNX, `decode_chunk`); numeric settings are as they are.
ID_FORMS = {
    "stop": Tensor(
        "stop_ids",
        "int32",
        (None, None, None),
        "n stop sequences per row, each right-padded with 0 (all 0 = unused); a row stops once its generated ids "
        "end with one of them (included in the output)",
    ),
}
SEED_OUT = Tensor("seed", "int32", BATCH, "the seed each row used (drawn where the input was negative)")


def id_setting(spec: Setting, shape: tuple[int | None, ...] = BATCH) -> Tensor:
    """A setting as an id-level input: `ID_FORMS` for strings, otherwise its own name, dtype and `shape`."""
    return ID_FORMS.get(spec.name, setting_tensor(spec, shape))


def serving_inputs() -> tuple[Tensor, ...]:
    """`serving_default`: `prompt`, then every setting, each `[batch]` (TF Serving's row format needs it)."""
    return (Tensor("prompt", "string", BATCH, "the text to continue"), *(setting_tensor(s) for s in SETTINGS))


def generate_inputs() -> tuple[Tensor, ...]:
    """The id-level `generate` (TFLite, ONNX): `prompt_ids`, then every setting in its id form."""
    prompt = Tensor(
        "prompt_ids",
        "int32",
        (None, None),
        "right-padded with 0 (a row of zeros is an empty prompt); a 0 before the last non-zero id, or any "
        "negative id, is the unknown token `[UNK]`",
    )
    return (prompt, *(id_setting(s, GENERATE_SHAPES.get(s.name, BATCH)) for s in SETTINGS))


GENERATE_SHAPES = {"max_new_chars": ()}  # the id-level `generate` takes one length for the whole batch

# What a stream carries between `decode_start` / `decode_chunk` calls besides the recurrent states.
DECODE_STATE = (
    Tensor("logits", "float32", (None, None), "the next token's logits `[batch, vocab]`"),
    STATE_TENSOR,
    Tensor("prev_ids", "int32", BATCH, "the last token fed"),
    Tensor("seen", "float32", (None, None), "1 where a token is in the row's text `[batch, vocab]`"),
    Tensor("count", "int32", BATCH, "tokens generated so far"),
    Tensor("done", "bool", BATCH, "whether the row has stopped"),
    Tensor("recent", "int32", (None, None), "the last generated ids, most recent first, 0 = none `[batch, s]`"),
    Tensor("prompt", "string", BATCH, "the prompt (the first chunk's text follows it)"),
)


def decode_settings() -> tuple[Tensor, ...]:
    """The settings `decode_chunk` takes, in their id form (`decode_start` returns them)."""
    return tuple(id_setting(s) for s in SETTINGS)


# --- seeing inside the network (`keras_chargen.inspection`) ---
INSPECT, EXPLAIN_SAMPLING = "inspect", "explain_sampling"  # the signatures' names
INSPECT_TOP = 5  # alternatives `inspect` returns per position
EXPLAIN_TOP = 16  # tokens `explain_sampling` shows: the most likely at any stage
# `explain_sampling`'s stages: the distribution as the model gives it, then after each setting's logit processor
# in the order `keras_chargen.sampling.next_token` applies them (each named after its setting)
SAMPLING_STAGES = ("model", "repetition_penalty", "temperature", "top_k", "top_p")


def inspect_signatures() -> tuple[Signature, Signature]:
    """`inspect` (per position: the token, its probability, the alternatives, a layer's activations) and
    `explain_sampling` (the next-token distribution before and after each setting the sampler reads)."""
    batch_time = (None, None)
    inspect = Signature(
        INSPECT,
        (
            Tensor("text", "string", BATCH, "the text to inspect, read from the zero state"),
            Tensor("layer", "int32", BATCH, "the recurrent layer whose activations come back (0 = the first)"),
            Tensor("cell", "int32", BATCH, "-1: every cell of the layer; otherwise that cell alone"),
        ),
        (
            Tensor("tokens", "string", batch_time, "the text of each position"),
            Tensor("ids", "int32", batch_time, "the id of each position (0: unknown, and the padding)"),
            Tensor("lengths", "int32", BATCH, "positions per row"),
            Tensor("prob", "float32", batch_time, "the probability of each position's token (0 at position 0)"),
            Tensor("top_ids", "int32", (None, None, None), f"the {INSPECT_TOP} most likely ids at each position"),
            Tensor("top_probs", "float32", (None, None, None), "their probabilities"),
            Tensor("top_tokens", "string", (None, None, None), "their text"),
            Tensor("activations", "float32", (None, None, None, None), "`[batch, time, kinds, cells]` of `layer`"),
            Tensor("activation_names", "string", (None, None), "the kinds: `h, c, i, f, o` for an LSTM"),
            Tensor("num_layers", "int32", BATCH, "the recurrent layers"),
            Tensor("num_cells", "int32", BATCH, "the cells of each layer"),
        ),
        "per position: the token's probability, the alternatives and one layer's activations",
    )
    processors = [s for s in SETTINGS if s.name in SAMPLING_STAGES]
    explain = Signature(
        EXPLAIN_SAMPLING,
        (Tensor("prompt", "string", BATCH, "the text before the next token"), *map(setting_tensor, processors)),
        (
            Tensor("ids", "int32", (None, None), f"the {EXPLAIN_TOP} tokens most likely at any stage"),
            Tensor("tokens", "string", (None, None), "their text"),
            Tensor("probs", "float32", (None, len(SAMPLING_STAGES), None), "per stage"),
            Tensor("other", "float32", (None, len(SAMPLING_STAGES)), "the probability of every other token"),
            Tensor("stages", "string", (None, len(SAMPLING_STAGES)), "the stages: " + ", ".join(SAMPLING_STAGES)),
        ),
        "the next-token distribution as the model gives it and after each sampling setting",
    )
    return inspect, explain


def _signatures() -> dict[str, Signature]:
    text_out = (
        Tensor("text", "string", BATCH, "prompt + continuation"),
        Tensor("generated", "string", BATCH, "the continuation"),
        SEED_OUT,
    )
    ids = Tensor("ids", "int32", BATCH, "one token id per row")
    logits = Tensor("logits", "float32", (None, None), "`[batch, vocab]`")
    several_stops = tuple(
        replace(t, shape=(None, None), meaning=t.meaning + "; several per row `[batch, n]`, '' = unused")
        if t.dtype == "string"
        else t
        for t in serving_inputs()
        if t.name != "prompt"
    )
    return {
        s.name: s
        for s in (
            Signature(DEFAULT_SIGNATURE, serving_inputs(), text_out, "generate text (prompt + every setting)"),
            Signature("step", (ids, STATE_TENSOR), (logits, STATE_TENSOR), "one token: logits and the new states"),
            Signature(
                "encode",
                (Tensor("prompt", "string", BATCH),),
                (
                    Tensor("ids", "int32", (None, None), "the ids the model is primed on, right-padded with 0"),
                    Tensor("lengths", "int32", BATCH),
                ),
                "prompts to the ids the model is primed on",
            ),
            Signature(
                "decode",
                (Tensor("ids", "int32", (None, None)),),
                (Tensor("text", "string", BATCH, "ids outside 1..vocab-1 (the padding 0) are dropped"),),
                "ids to text",
            ),
            Signature(
                "decode_start",
                (Tensor("prompt", "string", BATCH), *several_stops),
                (*DECODE_STATE, *decode_settings()),
                "a stream's start: prime on the prompts; the decode state and the settings `decode_chunk` takes "
                "(`seed` as used, `stop_ids` from the stop strings)",
            ),
            Signature(
                "decode_chunk",
                (*DECODE_STATE, *decode_settings(), Tensor("steps", "int32", (), "tokens to generate at most")),
                (*DECODE_STATE, Tensor("text", "string", BATCH, "the text this chunk added")),
                "a stream's next chunk: up to `steps` tokens per row, the state carried",
            ),
            *inspect_signatures(),
        )
    }


SIGNATURES = _signatures()  # the SavedModel's signatures, by name
GENERATE = Signature(
    "generate",
    generate_inputs(),
    (
        Tensor("ids", "int32", (None, None), "`[batch, max_new_chars]`, 0 after a row stops"),
        SEED_OUT,
    ),
    "the whole decode loop on ids (TFLite, ONNX)",
)
STEP = SIGNATURES["step"]  # also `step.tflite` / `step.onnx`
ID_DECODE_STATE = tuple(t for t in DECODE_STATE if t.dtype != "string")  # the stream's state without the prompt
DECODE = Signature(
    "decode",
    (
        Tensor("start", "bool", (), "True: prime on `prompt_ids` (the carried state is ignored); False: go on"),
        generate_inputs()[0],
        *decode_settings(),
        Tensor("steps", "int32", (), "tokens to generate at most in this call"),
        *ID_DECODE_STATE,
    ),
    (
        Tensor("ids", "int32", (None, None), "this call's ids `[batch, <= steps]`, 0 after a row stops"),
        *ID_DECODE_STATE,
        SEED_OUT,
    ),
    "a stream on ids, a chunk of tokens per call (the web export's `decode.onnx`): the state goes back in",
)
ID_SIGNATURES = {"step": STEP, "generate": GENERATE}  # the TFLite and ONNX files


def onnx_output_name(signature: Signature, name: str) -> str:
    """An output's ONNX name: `ONNX_OUTPUT_PREFIX` + name where an input has that name (`new_h_0`, `new_seed`)."""
    names = set(signature.input_names)
    return ONNX_OUTPUT_PREFIX + name if name in names or (is_state(name) and STATES in names) else name


def expand(tensors: Sequence[Tensor], states: Sequence[tuple[str, int]]) -> list[Tensor]:
    """`tensors` with `STATES` replaced by one `[batch, size]` float32 tensor per `(name, size)` of `states`."""
    out: list[Tensor] = []
    for tensor in tensors:
        if tensor.name == STATES:
            out += [Tensor(name, "float32", (None, size), "recurrent state") for name, size in states]
        else:
            out.append(tensor)
    return out


def markdown_table(signatures: Iterable[Signature]) -> str:
    """The signatures as a Markdown table (docs/export.md and docs/serving.md embed it; a test checks it)."""
    rows = ["| signature | inputs | outputs |", "| --- | --- | --- |"]

    def dims(t: Tensor) -> str:
        return ", ".join(
            "batch" if i == 0 and d is None else "·" if d is None else str(d) for i, d in enumerate(t.shape)
        )

    def cell(tensors: Sequence[Tensor]) -> str:
        return "<br>".join(
            f"`{t.name if t.name != STATES else 'h_0, c_0, …'}` {t.dtype} `[{dims(t)}]`" for t in tensors
        )

    for s in signatures:
        rows.append(f"| `{s.name}` | {cell(s.inputs)} | {cell(s.outputs)} |")
    return "\n".join(rows)
