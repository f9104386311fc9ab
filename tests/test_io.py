"""Atomic writes, write errors as one line, and removing the temp files of killed writers."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time

import pytest

from keras_chargen.errors import ChargenError, WriteError
from keras_chargen.io import atomic_path, atomic_write_text, drop_partial_line, is_temp, remove_stale_temps, temp_name
from keras_chargen.lock import LOCK_FILE, DirectoryLock, owner_tag, process_start, tag_is_stale


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def test_temp_names_carry_this_process_and_tell_a_live_writer_from_a_dead_one(dead_pid):
    assert owner_tag() == f"{os.getpid()}-{process_start(os.getpid())}@{_host()}"
    assert temp_name("state.weights.h5") == f".state.weights.h5.{owner_tag()}."
    assert not tag_is_stale(f"{temp_name('x')}abcd1234.tmp")  # this process: alive
    assert tag_is_stale(f".x.{dead_pid}-1@{_host()}.abcd1234.tmp")  # gone
    assert tag_is_stale(f".x.{os.getpid()}-1@{_host()}.abcd1234.tmp")  # the pid now belongs to a later process
    assert not tag_is_stale(f".x.{dead_pid}-1@another_host.abcd1234.tmp")  # cannot tell: kept
    assert not tag_is_stale(".x.abcd1234.tmp")  # no tag


def test_atomic_write_leaves_no_temp_and_an_error_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path):
    target = tmp_path / "backup" / "progress.json"
    atomic_write_text(target, "old")
    with pytest.raises(WriteError) as info, atomic_path(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises on a full disk
    assert str(info.value) == f"cannot write {target}: No space left on device"
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["progress.json"]
    with pytest.raises(FileNotFoundError), atomic_path(target):  # another file's problem is not a write error
        (tmp_path / "missing.txt").read_bytes()


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with (
        pytest.raises(ChargenError, match=f"cannot write {tmp_path / 'file' / 'x.json'}: "),
        atomic_path(tmp_path / "file" / "x.json"),
    ):
        pass


def test_drop_partial_line_cuts_an_append_cut_short(tmp_path):
    log = tmp_path / "history.csv"
    log.write_bytes(b"epoch,loss\n0,1.5\n1,1.")
    drop_partial_line(log)
    assert log.read_bytes() == b"epoch,loss\n0,1.5\n"
    drop_partial_line(log)  # complete: unchanged
    drop_partial_line(tmp_path / "none.csv")  # absent: nothing to do
    assert log.read_bytes() == b"epoch,loss\n0,1.5\n"


def test_stale_temps_go_and_live_ones_stay(tmp_path, dead_pid):
    host = _host()
    dead = [
        tmp_path / f".1.{dead_pid}-1@{host}.abcd1234.tmp",  # an export's staging folder
        tmp_path / f".2.{dead_pid}-1@{host}.abcd1234.old",  # an overwrite's old version, moved aside
        tmp_path / "sub" / f".x.json.{dead_pid}-1@{host}.abcd1234.tmp",
    ]
    live = [tmp_path / f"{temp_name('3')}abcd1234.tmp", tmp_path / f".4.{dead_pid}-1@elsewhere.abcd1234.tmp"]
    untagged = [tmp_path / ".5.abcd1234.tmp", tmp_path / "sub" / ".state.weights.h5.lg8c4hse.tmp.weights.h5"]
    lock_temp = tmp_path / f".{LOCK_FILE}.abcd1234.tmp"
    mine = [tmp_path / "1", tmp_path / ".hidden", tmp_path / "notes.tmp"]
    for folder in (dead[0], dead[1], live[0], live[1], untagged[0], mine[0]):
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"x")
    for path in (dead[2], untagged[1], lock_temp, mine[1], mine[2]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert sorted(remove_stale_temps(tmp_path, recursive=False)) == dead[:2]
    assert remove_stale_temps(tmp_path) == [dead[2]]
    assert all(p.exists() for p in live + untagged + mine + [lock_temp])
    # holding the directory's lock: untagged temps (from before the tags) go too, except a young lock temp
    assert sorted(remove_stale_temps(tmp_path, locked=True)) == sorted(untagged)
    assert lock_temp.exists() and all(p.exists() for p in live + mine)
    old = time.time() - 3600
    os.utime(lock_temp, (old, old))
    assert remove_stale_temps(tmp_path, locked=True) == [lock_temp]
    assert is_temp(".state.weights.h5.lg8c4hse.tmp.weights.h5") and not is_temp(".hidden")


def test_the_lock_check_changes_nothing(tmp_path):
    DirectoryLock(tmp_path).check()  # free
    with DirectoryLock(tmp_path), pytest.raises(ChargenError, match="is in use by process"):
        DirectoryLock(tmp_path).check()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("keras_chargen.lock.json.dump", full_disk)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / LOCK_FILE}: No space left on device"):
        DirectoryLock(tmp_path).acquire()
    assert list(tmp_path.iterdir()) == []
