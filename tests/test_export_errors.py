"""Export errors are one line, and an interrupted export's exit status matches what it left on disk."""

import errno
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from test_cli import assert_one_line_error, assert_usage_error, run_cli

import keras_chargen.export as export_package
from keras_chargen.export import layout
from keras_chargen.io import temp_name


@pytest.mark.parametrize(
    "out, fragment",
    [
        ("/proc/x/chargen", "cannot create /proc/x/chargen/1"),
        ("FILE/chargen", "is a file, not a directory"),
    ],
)
def test_unwritable_export_path_is_one_line(trained_dir, tmp_path, capsys, out, fragment):
    (tmp_path / "FILE").write_text("not a directory")
    out = out.replace("FILE", str(tmp_path / "FILE"))
    code, _, err = run_cli(capsys, "export", trained_dir, "--out", out)
    assert_one_line_error(code, err, fragment.replace("FILE", str(tmp_path / "FILE")))


@pytest.mark.parametrize("version", ["0", "9223372036854775808", "99999999999999999999"])
def test_version_outside_int64_is_refused(trained_dir, tmp_path, capsys, version):
    code, _, err = run_cli(capsys, "export", trained_dir, "--out", tmp_path / "e", "--version", version)
    assert_usage_error(code, err, "export", "--version must be an integer from 1 to 9223372036854775807")
    assert not (tmp_path / "e").exists()


def test_interrupt_after_the_rename_exits_0(trained_dir, tmp_path, capsys, monkeypatch):
    original = layout._replace_dir

    def rename_then_interrupt(tmp, path):
        original(tmp, path)
        raise KeyboardInterrupt  # Ctrl-C just after the version folder is in place

    monkeypatch.setattr(layout, "_replace_dir", rename_then_interrupt)
    code, out, err = run_cli(capsys, "export", trained_dir, "--out", tmp_path / "e", "--version", "9223372036854775807")
    target = tmp_path / "e" / "9223372036854775807"
    assert code == 0 and out == f"exported {target}\n" and "after the export was complete" in err
    assert (target / "saved_model.pb").exists()


def test_interrupt_before_the_rename_exits_130_and_leaves_nothing(trained_dir, tmp_path, capsys, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_package, "_write", interrupted)
    code, out, err = run_cli(capsys, "export", trained_dir, "--out", tmp_path / "e")
    assert code == 130 and out == "" and f"not exported {tmp_path / 'e' / '1'}" in err
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),  # a Python write (TFLite, ONNX files)
        tf.errors.ResourceExhaustedError(None, None, "/x/.1.tmp/saved_model.pb.tmp0a1b; No space left on device"),
    ],
    ids=["oserror", "tensorflow"],
)
def test_a_full_disk_while_exporting_is_one_line_and_leaves_nothing(
    trained_dir, tmp_path, capsys, monkeypatch, failure
):
    def full_disk(*args):
        raise failure

    monkeypatch.setattr(export_package, "_write", full_disk)
    code, out, err = run_cli(capsys, "export", trained_dir, "--out", tmp_path / "e")
    assert_one_line_error(code, err, f"error: cannot write {tmp_path / 'e' / '1'}: No space left on device")
    assert out == "" and not (tmp_path / "e").exists()


def test_an_export_removes_what_killed_exports_left_but_not_a_live_ones_folder(trained_dir, tmp_path, capsys):
    base = tmp_path / "e"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = temp_name("x").split("@")[1].rstrip(".")
    left = [base / f".1.{dead.pid}-1@{host}.abcd1234.tmp", base / "tflite" / f".1.{dead.pid}-1@{host}.wxyz5678.tmp"]
    live = [base / f"{temp_name('1')}live0000.tmp"]
    for folder in left + live:
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"half")
    code, out, _ = run_cli(capsys, "export", trained_dir, "--out", base, "--format", "savedmodel")
    assert code == 0 and out == f"exported {base / '1'}\n"
    assert not left[0].exists() and not left[1].exists() and live[0].exists()  # every format's folder is cleaned
