"""Export errors are one line, and an interrupted export's exit status matches what it left on disk."""

import pytest
from test_cli import assert_one_line_error, run_cli

import keras_chargen.export as export_package
from keras_chargen.export import layout


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
    assert_one_line_error(code, err, "version must be an integer from 1 to 9223372036854775807")
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
