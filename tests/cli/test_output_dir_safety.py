"""``qdc train`` never deletes what it did not write, refuses unsafe output folders, runs one at a time per folder."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qdc_trainer.cli import main
from qdc_trainer.cli.output_dir import LOCK_FILE, MARKER_FILE, OutputDirError, RunFolder, acquire_lock, release_lock

ROWS = [{"prompt": f"{i} + 1 =", "completion": f" {i + 1}"} for i in range(12)]


def _train(out, data, *flags):
    """``qdc train`` in this process on a local JSON file with a one-layer model; returns (exit code, stderr)."""
    args = ["train", "--task", "dataset", "--dataset_name", "json", "--data_files", str(data), "--quality", "none"]
    args += ["--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--n_clusters", "2", "--probes", "2"]
    args += ["--monitor", "false", "--detector", "false", "--max_tokens", "16", "--per_device_train_batch_size", "4"]
    args += ["--use_cpu", "true", "--report_to", "none", "--report", "false", "--save_strategy", "no"]
    args += ["--max_steps", "1", "--output_dir", str(out), *flags]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def _fails_cleanly(code, err, *parts):
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err[-2000:]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return path


def _user_folder(folder: Path) -> dict[str, str]:
    """A folder of the user's own, with the names an earlier qdc run would have written."""
    (folder / "report").mkdir(parents=True)
    files = {"results.json": '{"my": "results"}', "trainer_state.json": "{}", "report/report.html": "x"}
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


def test_a_folder_qdc_did_not_write_is_refused_and_left_as_it_was(tmp_path, data):
    files = _user_folder(tmp_path / "d")
    code, err = _train(tmp_path / "d", data, "--model_name_or_path", str(tmp_path / "nonexistent"))
    _fails_cleanly(code, err, "was not written by qdc train", MARKER_FILE, "results.json", "new or empty output_dir")
    assert {n: (tmp_path / "d" / n).read_text() for n in files} == files
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["report", "results.json", "trainer_state.json"]


@pytest.mark.parametrize("where", ["/", "~", ".", "..", "home", "/tmp"])
def test_unsafe_output_dirs_are_refused(tmp_path, data, monkeypatch, where):
    home = tmp_path / "home"
    work = home / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    out = str(home) if where == "home" else where
    before = sorted(p.name for p in home.iterdir())
    code, err = _train(out, data)
    named = str(home) if where == "~" else out  # TrainingArguments expands "~" itself
    _fails_cleanly(code, err, f"output_dir {named!r} is", "needs a folder of its own")
    assert sorted(p.name for p in home.iterdir()) == before and not any(work.iterdir())


def test_a_run_that_fails_at_startup_keeps_the_earlier_run(tmp_path, data):
    out = tmp_path / "run"
    code, err = _train(out, data)
    assert code == 0, err[-3000:]
    assert (out / MARKER_FILE).is_file() and not (out / LOCK_FILE).exists()
    earlier = {n: (out / n).read_text() for n in ("results.json", "trainer_state.json", "qdc_run.json")}
    code, err = _train(out, data, "--model_name_or_path", str(tmp_path / "nonexistent"))
    _fails_cleanly(code, err, "nonexistent")
    assert {n: (out / n).read_text() for n in earlier} == earlier  # nothing removed or replaced
    assert not (out / LOCK_FILE).exists()  # released after the failure too
    # The folder is qdc's (marked): a fresh run that starts replaces the earlier run.
    code, err = _train(out, data, "--max_steps", "2")
    assert code == 0, err[-3000:]
    assert json.loads((out / "results.json").read_text())["global_step"] == 2


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path, data):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"pid": holder.pid, "hostname": socket.gethostname(), "started": 1_700_000_000.0}
        (out / LOCK_FILE).write_text(json.dumps(lock))
        code, err = _train(out, data)
        _fails_cleanly(code, err, "in use by another qdc train run", f"process {holder.pid}", socket.gethostname())
        assert "2023-11-14 22:13:20 UTC" in err and str(out / LOCK_FILE) in err
        assert json.loads((out / LOCK_FILE).read_text()) == lock  # another run's lock is never removed
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nor anything written
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_on_another_host_is_refused_and_a_stale_one_taken_over(tmp_path, data, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "hostname": "elsewhere", "started": 0}))
    code, err = _train(out, data)
    _fails_cleanly(code, err, "host elsewhere", "on another host")
    (out / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "hostname": socket.gethostname(), "started": 0}))
    code, err = _train(out, data)
    assert code == 0, err[-3000:]
    assert "no longer running" in caplog.text
    assert not (out / LOCK_FILE).exists()


def test_the_lock_is_taken_once_and_released_by_its_holder_only(tmp_path):
    mine = acquire_lock(tmp_path)
    with pytest.raises(OutputDirError, match=f"process {os.getpid()}"):
        acquire_lock(tmp_path)
    other = dict(mine, started=mine["started"] + 1)
    release_lock(tmp_path, other)  # not the holder: nothing happens
    assert (tmp_path / LOCK_FILE).is_file()
    release_lock(tmp_path, mine)
    assert not (tmp_path / LOCK_FILE).exists()
    # A run that raises inside the folder releases the lock on its way out.
    with pytest.raises(RuntimeError), RunFolder(tmp_path / "r", fresh=True):
        assert (tmp_path / "r" / LOCK_FILE).is_file()
        raise RuntimeError("crash")
    assert not (tmp_path / "r" / LOCK_FILE).exists() and (tmp_path / "r" / MARKER_FILE).is_file()


def test_a_killed_run_leaves_a_lock_the_next_run_recognises_as_stale(tmp_path):
    code = (
        "import os, sys; from qdc_trainer.cli.output_dir import RunFolder\n"
        f"f = RunFolder({str(tmp_path / 'r')!r}, fresh=True).__enter__(); os._exit(9)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 9
    assert (tmp_path / "r" / LOCK_FILE).is_file()
    with RunFolder(tmp_path / "r", fresh=True):
        assert json.loads((tmp_path / "r" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "r" / LOCK_FILE).exists()
