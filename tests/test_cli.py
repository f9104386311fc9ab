import dataclasses
import shutil
import subprocess
import sys

import pytest
from conftest import CORPUS, REPO

from keras_chargen import ChargenConfig, FileSource, evaluate
from keras_chargen.cli import build_parser, main
from keras_chargen.config import flag_name


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Traceback" not in err


def assert_usage_error(code, err, command, fragment):
    """A bad flag value: the command's one-line usage, then one error line naming the flag (like argparse)."""
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"usage: keras-chargen {command} "), err
    assert lines[1].startswith(f"keras-chargen {command}: error: ") and fragment in lines[1], err
    assert "Traceback" not in err and "None" not in err


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
        pytest.param(["--units", "0"], "--units must be a positive integer; got 0", id="units"),
        pytest.param(["--layers", "0"], "--layers must be a positive integer; got 0", id="layers"),
        pytest.param(["--dropout", "1.5"], "--dropout must be in [0.0, 1.0); got 1.5", id="dropout"),
        pytest.param(["--val-fraction", "0"], "--val-fraction must be > 0", id="val-fraction"),
        pytest.param(["--seed", "-1"], "--seed must be a non-negative integer; got -1", id="seed"),
        pytest.param(["--learning-rate", "0"], "--learning-rate must be > 0", id="learning-rate"),
        pytest.param(["--documents", "--layout", "shuffled"], "--documents: document mode", id="documents"),
    ],
)
def test_train_bad_flag_values_print_usage_and_name_the_flag(tmp_path, extra, fragment, capsys):
    code, _, err = run_cli(capsys, "train", "--text", CORPUS, "--out", tmp_path / "m", *extra)
    assert_usage_error(code, err, "train", fragment)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        pytest.param(["--temperature", "-1"], "--temperature must be a finite number >= 0", id="negative-t"),
        pytest.param(["--temperature", "nan"], "--temperature must be a finite number >= 0; got nan", id="nan-t"),
        pytest.param(["--length", "-1"], "--length must be an integer in 0..100000; got -1", id="negative-length"),
        pytest.param(["--length", "1000000000"], "--length must be an integer in 0..100000", id="huge-length"),
        pytest.param(["--num-samples", "0"], "--num-samples must be an integer in 1..1000; got 0", id="num-samples"),
        pytest.param(
            ["--seed", "-1"], "--seed must be an integer in 0..2147483647; omit --seed for a random seed", id="seed"
        ),
        pytest.param(
            ["--top-k", "0"], "--top-k must be an integer >= 1; omit --top-k to turn it off; got 0", id="top-k"
        ),
        pytest.param(["--top-p", "0"], "--top-p must be a number in (0, 1] (1 = off); got 0.0", id="top-p-0"),
        pytest.param(["--top-p", "1.5"], "--top-p must be a number in (0, 1]", id="top-p-big"),
        pytest.param(["--top-p", "nan"], "--top-p must be a number in (0, 1] (1 = off); got nan", id="top-p-nan"),
        pytest.param(["--repetition-penalty", "-1"], "--repetition-penalty must be a finite number > 0", id="penalty"),
        pytest.param(
            ["--stop", ""], "--stop must be a non-empty string; omit --stop to turn it off; got ''", id="empty-stop"
        ),
        pytest.param(
            ["--temperature", "0.5", "-1"], "--temperature must be a finite number >= 0; got -1.0", id="second-t"
        ),
    ],
)
def test_generate_bad_flag_values_print_usage_and_name_the_flag(extra, fragment, capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", tmp_path / "no-model-needed", *extra)  # checked before loading
    assert_usage_error(code, err, "generate", fragment)


@pytest.mark.parametrize(
    "command, extra, fragment",
    [
        ("export", ["MODEL", "--out", "x", "--version", "0"], "--version must be an integer from 1 to"),
        ("export", ["MODEL", "--out", "x", "--quantize", "dynamic"], "--quantize applies to TFLite only"),
        ("evaluate", ["MODEL", "--ngram-order", "-1"], "--ngram-order must be an integer >= 0"),
        ("serve", ["DIR", "--workers", "0"], "--workers must be a positive integer; got 0"),
        ("serve", ["DIR", "--max-new-chars", "200000"], "--max-new-chars must be <= 100000"),
    ],
    ids=["export-version", "export-quantize", "evaluate-ngram", "serve-workers", "serve-cap"],
)
def test_other_bad_flag_values_print_usage_and_name_the_flag(command, extra, fragment, capsys):
    code, _, err = run_cli(capsys, command, *extra)
    assert_usage_error(code, err, command, fragment)


def test_a_serve_port_out_of_range_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "DIR", "--port", "70000"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.strip().splitlines()[-1] == (
        "keras-chargen serve: error: argument --port: must be an integer in 0..65535; got 70000"
    )


def test_generate_unknown_prompt_characters_are_one_line(trained_dir, capsys):
    code, _, err = run_cli(capsys, "generate", trained_dir, "--prompt", "ANNA §")
    assert_one_line_error(code, err, "characters not in the model's vocabulary: '§' (U+00A7)")


@pytest.mark.parametrize("command", ["train", "generate", "evaluate", "export", "serve", "bench"])
def test_help_shows_real_defaults_and_no_python_values(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # unwrapped
    for bad in ("(default: )", "None", "(default: False)", "(default: '", "(default: [", "%%"):
        assert bad not in out, bad
    if command == "generate":
        assert "--length N tokens (characters or words) to generate (at most 100000) (default: 500)" in out
        assert "omit --seed for a random seed" in out and "omit --top-k to turn it off" in out
        assert "--temperature T [T ...] sampling temperature >= 0, 0 is greedy; several values give one " in out
        assert "(default: 0.8)" in out
    if command == "train":
        assert "(default: lstm)" in out and "(default: 512)" in out and "0 = no limit (default: 0.0)" in out


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
