"""The native example (examples/c, LiteRT's C API): built with make, it gives the SavedModel's `serving_default`
text for the same prompt, seed and settings (characters and words, Unicode prompts, a stop string), and every
bad input is one line on stderr with a non-zero exit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import CORPUS, REPO

from keras_chargen import contract
from keras_chargen.settings import SETTINGS

EXAMPLE = REPO / "examples" / "c"
PROGRAM = EXAMPLE / "chargen"
DTYPES = {"float32": tf.float32, "int32": tf.int32, "string": tf.string}
LENGTH = {"char": 100, "word": 30}
# Three setting mixes, each on the same 10 prompts (row i of mix m has seed SEEDS[m] + i).
SEEDS = [5, 2**31 - 11, 0]
MIXES = [
    dict(temperature=0.8),
    dict(temperature=1.0, top_k=10, top_p=0.9, repetition_penalty=1.2),
    dict(temperature=0.7, stop="\n\n"),  # two tokens at either level: a speech's end
]


def prompts() -> list[str]:
    """10 prompts: from the corpus (one cut mid-word, one ending in a space), the empty one, and Unicode ones
    (characters outside the vocabulary are skipped; at the word level they are unknown words)."""
    text = CORPUS.read_text(encoding="utf-8")
    cut = [text[s : s + n] for s, n in ((0, 12), (400, 30), (1500, 7), (3000, 45), (5000, 21))]
    return ["", *cut, "The king ", "Ünïcödé — «café» naïve", "日本語: the 王 and thee", "emoji 🙂 🎉 end\n"]


PROMPTS = prompts()


@pytest.fixture(scope="module")
def program() -> Path:
    """examples/c/chargen, built with the system compiler against the wheel's libLiteRt.so."""
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("no make or C compiler (cc) on this machine")
    try:
        import ai_edge_litert
    except ImportError:
        pytest.skip("the ai-edge-litert wheel is not installed")
    if not (Path(ai_edge_litert.__file__).parent / "libLiteRt.so").exists():
        pytest.skip("this ai-edge-litert wheel ships no libLiteRt.so (LiteRT's C API)")
    build = subprocess.run(["make", "-C", str(EXAMPLE), "-s"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return PROGRAM


def native(program: Path, directory: Path, prompt: str, length: int, **settings) -> subprocess.CompletedProcess:
    """Run the program once; settings by their Python names (`stop` is escaped as a shell user types it)."""
    args = [str(program), str(directory), "--prompt", prompt, "--length", str(length)]
    for name, value in settings.items():
        if name == "stop":
            value = value.replace("\\", "\\\\").replace("\n", "\\n")
        args += ["--" + name.replace("_", "-"), str(value)]
    return subprocess.run(args, capture_output=True, timeout=60)


def served(savedmodel: Path, table: list[dict]) -> list[str]:
    """`serving_default`'s `generated` for the rows (one batch, each row its own seed and settings)."""
    serve = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    inputs = {"prompt": tf.constant([r["prompt"] for r in table])}
    for spec in SETTINGS:
        inputs[spec.name] = tf.constant([r.get(spec.name, spec.off) for r in table], DTYPES[spec.dtype])
    return [t.decode("utf-8") for t in serve(**inputs)["generated"].numpy()]


@pytest.fixture(params=["char", "word"])
def exported(request, exported_all, word_exported) -> tuple[str, Path]:
    return request.param, exported_all if request.param == "char" else word_exported


def test_the_tflite_folder_has_the_fixed_generator_and_its_manifest(exported):
    level, base = exported
    directory = base / "tflite" / "1"
    lines = (directory / contract.NATIVE_FILES["manifest"]).read_text(encoding="utf-8").splitlines()
    assert lines[0] == contract.NATIVE_FORMAT and lines[-1] == "end"
    assert f"level {level}" in lines and f"prompt {contract.FIXED_SHAPES['prompt']}" in lines
    assert [line.split()[1] for line in lines if line.startswith("input ")] == contract.GENERATE.input_names
    assert (level == "word") == any(line.startswith("word_chars ") for line in lines)


def test_native_text_is_the_savedmodels_for_the_same_seed(program, exported):
    level, base = exported
    table = [
        {"prompt": p, "seed": seed + i, "max_new_chars": LENGTH[level], **mix}
        for mix, seed in zip(MIXES, SEEDS)
        for i, p in enumerate(PROMPTS)
    ]
    expected = served(base / "1", table)
    assert len(set(expected)) > 25  # different rows, different texts
    stopped = [t for r, t in zip(table, expected) if "stop" in r and t.endswith("\n\n")]
    assert len(stopped) >= 3  # the stop mix really stops rows
    got = []
    for row in table:
        settings = {k: v for k, v in row.items() if k not in ("prompt", "max_new_chars")}
        result = native(program, base / "tflite" / "1", row["prompt"], row["max_new_chars"], **settings)
        assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
        got.append(result.stdout.decode("utf-8"))
    assert got == expected


def test_a_negative_seed_draws_one_and_reports_it(program, exported_all):
    directory = exported_all / "tflite" / "1"
    drawn = native(program, directory, "The", 40, seed=-1)
    assert drawn.returncode == 0
    line = drawn.stderr.decode()
    assert line.startswith("seed: ") and line.count("\n") == 1
    again = native(program, directory, "The", 40, seed=int(line.split()[1]))
    assert again.stdout == drawn.stdout and again.stderr == b""


def test_threads_change_the_speed_not_the_text(program, exported_all):
    directory = exported_all / "tflite" / "1"
    one, two = (native(program, directory, "The", 60, seed=3, threads=n) for n in (1, 2))
    assert one.returncode == two.returncode == 0 and one.stdout == two.stdout and one.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--length", "5"], "missing DIR"),
        (["DIR", "--temperature", "-1"], "--temperature must be a finite number >= 0; got '-1'"),
        (["DIR", "--temperature", "nan"], "--temperature must be a finite number >= 0; got 'nan'"),
        (["DIR", "--temperature", "inf"], "--temperature must be a finite number >= 0"),
        (["DIR", "--length", "-3"], "--length must be an integer in 0..100000; got '-3'"),
        (["DIR", "--length", "12x"], "--length must be an integer in 0..100000; got '12x'"),
        (["DIR", "--seed", "2147483648"], "--seed must be an integer <= 2147483647"),
        (["DIR", "--top-k", "0"], "--top-k must be an integer >= 1"),
        (["DIR", "--top-p", "0"], "--top-p must be a number in (0, 1]"),
        (["DIR", "--top-p", "1.5"], "--top-p must be a number in (0, 1]"),
        (["DIR", "--repetition-penalty", "0"], "--repetition-penalty must be a finite number > 0"),
        (["DIR", "--stop", ""], "--stop must be a non-empty string"),
        (["DIR", "--threads", "0"], "--threads must be an integer in 1..64; got '0'"),
        (["DIR", "--stop", "a\\"], "--stop ends in a lone backslash"),
        (["DIR", "--prompt"], "--prompt needs a value"),
        (["DIR", "--colour", "red"], "unknown flag --colour"),
        (["DIR", "--prompt", b"\xff\xfe"], "--prompt is not valid UTF-8"),
        (["DIR", "--prompt", "a" * 5000], "--prompt has 5000 tokens; this model takes at most 4096"),
        (["DIR", "--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e"], "at most 4 --stop"),
        (["MISSING"], "no such directory"),
        (["EMPTY"], "generate_fixed.txt is missing"),
        (["BROKEN"], "not a manifest this program reads"),
    ],
)
def test_bad_input_is_one_line_on_stderr(program, exported_all, tmp_path, args, message):
    directory = exported_all / "tflite" / "1"
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / contract.NATIVE_FILES["manifest"]).write_text("{}\n")
    places = {
        "DIR": str(directory),
        "MISSING": str(tmp_path / "missing"),
        "EMPTY": str(tmp_path / "empty"),
        "BROKEN": str(tmp_path / "broken"),
    }
    result = subprocess.run(
        [str(program), *(places.get(a, a) if isinstance(a, str) else a for a in args)], capture_output=True, timeout=60
    )
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode != 0 and result.stdout == b""
    assert err.count("\n") == 1 and err.startswith("chargen: error: ") and message in err, err


def test_a_missing_model_file_is_one_line_naming_it(program, exported_all, tmp_path):
    directory = tmp_path / "copy"
    shutil.copytree(exported_all / "tflite" / "1", directory)
    (directory / contract.NATIVE_FILES["generate_fixed"]).unlink()
    result = subprocess.run([str(program), str(directory), "--length", "3"], capture_output=True, timeout=60)
    err = result.stderr.decode()
    assert result.returncode == 1 and err.count("\n") == 1 and "generate_fixed.tflite" in err, err


LOWER_WORDS = ["\n", ".", ",", "the", "café", "ünïcödé", "σας", "σ", "straße", "i̇stanbul", "naïve", "«", "»", "—", "王"]


@pytest.fixture(scope="module")
def lowercase_words(tmp_path_factory) -> Path:
    """An untrained word model that lowercases, over Unicode words, as a SavedModel (`1/`) and TFLite (`tflite/`)."""
    from keras_chargen import ChargenConfig, CharGenerator, Vocabulary
    from keras_chargen.export.savedmodel import write_savedmodel
    from keras_chargen.export.tflite import write_tflite
    from keras_chargen.model import build_model

    vocab = Vocabulary(LOWER_WORDS, level="word", lowercase=True)
    model = build_model(ChargenConfig(units=16, num_layers=1, embedding_dim=8, level="word"), vocab.size)
    for weight in model.weights:  # large weights: the state, and so the text, depends on every prompt token
        weight.assign(weight * 4.0)
    generator = CharGenerator(model, vocab.tokens, level="word", lowercase=True)
    out = tmp_path_factory.mktemp("lowercase_words")
    vocab.save(out / "vocab.json")
    for name, write in (("1", write_savedmodel), ("tflite", write_tflite)):
        (out / name).mkdir()
        write(generator, out / name, out / "vocab.json")
    return out


def test_a_lowercasing_word_model_reads_unicode_prompts_as_the_savedmodel(program, lowercase_words):
    """Prompt words lowercased and split by Unicode class as the SavedModel does (a word read differently would
    change the state the text grows from)."""
    table = [
        {"prompt": p, "seed": 11 + i, "max_new_chars": 25, "temperature": 1.0, "repetition_penalty": 50.0}
        for i, p in enumerate(
            [
                "THE CAFÉ, «ÜNÏCÖDÉ» — NAÏVE.",
                "ΣΑΣ Σ ΣΑΣ.",
                "STRASSE STRAẞE straße\tİSTANBUL",
                "王王 The\u00a0café\u2028the",
                "unknown words, THE end ",
            ]
        )
    ]
    expected = served(lowercase_words / "1", table)
    got = []
    for row in table:
        result = native(
            program,
            lowercase_words / "tflite",
            row["prompt"],
            25,
            seed=row["seed"],
            temperature=1.0,
            repetition_penalty=50.0,
        )
        assert result.returncode == 0, result.stderr.decode()
        got.append(result.stdout.decode("utf-8"))
    assert got == expected
