import dataclasses
import shutil
import subprocess
import sys

import pytest
from conftest import CORPUS, REPO

from keras_chargen import ChargenConfig, FileSource, evaluate
from keras_chargen.cli import build_parser, flag_name, main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Traceback" not in err


def test_every_config_field_has_exactly_one_flag():
    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train_parser._actions}
    assert {f.name for f in dataclasses.fields(ChargenConfig)} <= dests
    assert flag_name("num_layers") == "--layers" and flag_name("seq_len") == "--seq-len"


@pytest.mark.parametrize("command", ["train", "generate", "evaluate", "export", "serve"])
def test_help_is_useful(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: keras-chargen " + command in out
    if command == "train":
        for flag in (
            "--text",
            "--tfds",
            "--out",
            "--cell",
            "--layers",
            "--units",
            "--embedding-dim",
            "--dropout",
            "--seq-len",
            "--batch-size",
            "--epochs",
            "--val-fraction",
            "--layout",
            "--seed",
        ):
            assert flag in out


def test_generate_prints_prompt_then_text_and_separates_samples(trained_dir, capsys):
    code, out, _ = run_cli(capsys, "generate", trained_dir, "--prompt", "ANNA:", "--length", "40", "--seed", "1")
    assert code == 0 and out.startswith("ANNA:") and len(out.rstrip("\n")) >= 40
    code, out, _ = run_cli(
        capsys, "generate", trained_dir, "--prompt", "ANNA:", "--length", "30", "--num-samples", "3", "--seed", "2"
    )
    assert code == 0 and out.count("===== sample ") == 3 and "===== sample 3 of 3 =====" in out
    assert out.count("ANNA:") >= 3


def test_generate_prints_the_seed_it_drew_and_that_seed_reproduces_the_text(trained_dir, capsys):
    args = ("generate", trained_dir, "--prompt", "ANNA:", "--length", "40", "--num-samples", "2")
    code, out, err = run_cli(capsys, *args)
    seed = int(err.split("seed: ")[1].split()[0])
    assert code == 0 and 0 <= seed <= 2**31 - 1
    assert run_cli(capsys, *args, "--seed", str(seed))[1] == out


def test_generate_sampling_flags(trained_dir, capsys):
    from keras_chargen import load_generator

    generator = load_generator(trained_dir)
    code, out, _ = run_cli(
        capsys,
        "generate",
        trained_dir,
        "--prompt",
        "ANNA:",
        "--length",
        "60",
        "--seed",
        "3",
        "--top-k",
        "40",
        "--top-p",
        "0.9",
        "--repetition-penalty",
        "1.2",
        "--stop",
        r"\n\n",
        "--temperature",
        "0.2",
        "0.5",
        "1.0",
        "--num-samples",
        "2",
    )
    assert code == 0
    expected = generator.generate(
        ["ANNA:"] * 6, [0.2, 0.5, 1.0] * 2, 60, seed=3, top_k=40, top_p=0.9, repetition_penalty=1.2, stop="\n\n"
    )
    headers = [f"===== sample {i} of 2, temperature {t} =====" for i in (1, 2) for t in ("0.2", "0.5", "1")]
    assert out == "".join(f"{h}\nANNA:{text}\n" for h, text in zip(headers, expected))
    code, out, _ = run_cli(
        capsys, "generate", trained_dir, "--prompt", "ANNA:", "--length", "200", "--temperature", "0", "--stop", r"\n"
    )
    greedy = generator.generate("ANNA:", 0.0, 200)[0]
    assert code == 0 and out == "ANNA:" + greedy[: greedy.index("\n") + 1] + "\n"


def test_evaluate_last_line_is_bits_per_char(trained_dir, capsys):
    code, out, _ = run_cli(capsys, "evaluate", trained_dir, "--text", CORPUS)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-1].startswith("bits/char: ") and "nats/char" in out and "perplexity" in out
    expected = evaluate(trained_dir, FileSource((CORPUS,)))["bpc"]
    assert float(lines[-1].split()[-1]) == pytest.approx(expected, abs=1e-4)
    code, out, _ = run_cli(capsys, "evaluate", trained_dir, "--text", CORPUS, "--ngram-order", "3")
    assert code == 0 and "order-3 n-gram baseline: " in out and out.strip().splitlines()[-1] == lines[-1]


@pytest.fixture
def bad_texts(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("a few words only")
    (tmp_path / "bad.txt").write_bytes(b"fine text \xff\xfe then bytes")
    return tmp_path


@pytest.mark.parametrize(
    "extra, fragment",
    [
        pytest.param(["--text", "empty.txt"], "corpus is empty", id="empty"),
        pytest.param(["--text", "short.txt"], "corpus is too short", id="short"),
        pytest.param(["--text", "bad.txt"], "invalid UTF-8 at byte 10", id="bad-utf8"),
        pytest.param(["--text", "nope.txt"], "no such file or directory", id="missing"),
        pytest.param(["--text", CORPUS, "--units", "0"], "units must be a positive integer", id="units"),
        pytest.param(["--text", CORPUS, "--dropout", "1.5"], "dropout must be in [0.0, 1.0)", id="dropout"),
        pytest.param(["--text", CORPUS, "--val-fraction", "0"], "val_fraction must be > 0", id="val-fraction"),
        pytest.param(["--text", CORPUS, "--tfds", "tiny_shakespeare"], "one corpus at most", id="two-sources"),
    ],
)
def test_train_bad_inputs(bad_texts, extra, fragment, capsys):
    extra = [bad_texts / e if str(e).endswith(".txt") and e != CORPUS else e for e in extra]
    code, _, err = run_cli(capsys, "train", "--out", bad_texts / "m", *extra)
    assert_one_line_error(code, err, fragment)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        pytest.param(["--prompt", "ANNA §"], "characters not in the model's vocabulary: '§' (U+00A7)", id="oov"),
        pytest.param(["--temperature", "-1"], "temperature must be a finite number >= 0", id="negative-t"),
        pytest.param(["--temperature", "nan"], "temperature must be a finite number >= 0; got nan", id="nan-t"),
        pytest.param(["--length", "-1"], "max_new_chars must be an integer in 0..100000; got -1", id="negative-length"),
        pytest.param(["--length", "1000000000"], "max_new_chars must be an integer in 0..100000", id="huge-length"),
        pytest.param(["--num-samples", "0"], "num-samples must be between 1 and 1000", id="num-samples"),
        pytest.param(["--top-k", "0"], "top_k must be an integer >= 1 (None = off); got 0", id="top-k"),
        pytest.param(["--top-p", "0"], "top_p must be a number in (0, 1] (1 = off); got 0.0", id="top-p-0"),
        pytest.param(["--top-p", "1.5"], "top_p must be a number in (0, 1]", id="top-p-big"),
        pytest.param(["--top-p", "nan"], "top_p must be a number in (0, 1] (1 = off); got nan", id="top-p-nan"),
        pytest.param(["--repetition-penalty", "-1"], "repetition_penalty must be a finite number > 0", id="penalty"),
        pytest.param(["--stop", ""], "stop must be a non-empty string", id="empty-stop"),
        pytest.param(
            ["--temperature", "0.5", "-1"], "temperature must be a finite number >= 0; got -1.0", id="second-t"
        ),
    ],
)
def test_generate_bad_inputs(trained_dir, extra, fragment, capsys):
    code, _, err = run_cli(capsys, "generate", trained_dir, *extra)
    assert_one_line_error(code, err, fragment)


def test_generate_oov_skip_keeps_the_prompt_as_typed(trained_dir, capsys):
    code, out, _ = run_cli(capsys, "generate", trained_dir, "--prompt", "ANNA §", "--oov", "skip", "--length", "5")
    assert code == 0 and out.startswith("ANNA §")


def test_missing_or_corrupt_model_dir(trained_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", tmp_path / "nowhere")
    assert_one_line_error(code, err, "model directory not found")
    broken = tmp_path / "broken"
    shutil.copytree(trained_dir, broken, ignore=shutil.ignore_patterns("data", "logs", "backup"))
    (broken / "model.keras").write_bytes(b"not a zip file")
    code, _, err = run_cli(capsys, "generate", broken)
    assert_one_line_error(code, err, "corrupt or incompatible weights file")
    (broken / "model.keras").unlink()
    code, _, err = run_cli(capsys, "generate", broken)
    assert_one_line_error(code, err, "missing weights")
    (broken / "config.json").write_text('{"units": 8, "colour": "red"}')
    code, _, err = run_cli(capsys, "generate", broken)
    assert_one_line_error(code, err, "unknown config keys: colour")
    (broken / "config.json").unlink()
    code, _, err = run_cli(capsys, "evaluate", broken, "--text", CORPUS)
    assert_one_line_error(code, err, "missing model config")


def test_real_process_exit_code_and_single_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "keras_chargen", "generate", str(tmp_path / "none")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: model directory not found: {tmp_path / 'none'}"
    assert "Traceback" not in done.stderr
