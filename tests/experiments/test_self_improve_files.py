"""The self-improvement run's files: written atomically, a damaged one named, and ``--overwrite true`` still able to
replace a run whose ``config.json`` was cut short."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from qdc_trainer._io import read_json, write_json
from qdc_trainer.cli.recipes import RECIPES_DIR
from qdc_trainer.experiments.self_improve import SelfImproveConfig
from qdc_trainer.experiments.self_improve.rounds import _arm_job, _base_job

ROOT = Path(__file__).resolve().parents[2]
RECIPE = RECIPES_DIR / "arithmetic" / "self_improve.yaml"


def _cut(path: Path, value) -> None:
    text = json.dumps(value, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text[: len(text) // 2])


def _main(*flags, capsys):
    from qdc_trainer.cli import main

    args = ["self-improve", "--config", str(RECIPE), "--smoke", "true", "--report", "false", "--workers", "1"]
    code = main([*args, *flags])
    return code, capsys.readouterr().err


def test_a_cut_config_json_is_named_and_overwrite_replaces_the_run(tmp_path, capsys, monkeypatch):
    import qdc_trainer.experiments.self_improve.run as si

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(si, "_run_jobs", started)
    run = tmp_path / "run"
    (run / "seed0" / "tokenizer").mkdir(parents=True)
    _cut(run / "seed0" / "base.json", {"seed": 0, "round": 0})
    _cut(run / "config.json", dataclasses.asdict(SelfImproveConfig()))
    (run / "notes.txt").write_text("keep me")
    code, err = _main("--output_dir", str(run), capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{run / 'config.json'} is not valid JSON" in err and "--overwrite true" in err
    with pytest.raises(Started):
        _main("--output_dir", str(run), "--overwrite", "true", capsys=capsys)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "notes.txt"]
    assert isinstance(read_json(run / "config.json"), dict)  # this run's settings, whole


def test_a_cut_config_json_alone_is_no_run_marker(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": ')  # not ours, and no seed folders next to it
    (folder / "important.txt").write_text("keep me")
    code, err = _main("--output_dir", str(folder), "--overwrite", "true", capsys=capsys)
    assert code == 2 and "holds no self-improvement run" in err
    assert (folder / "important.txt").read_text() == "keep me"


@pytest.mark.parametrize("name", ["base.json", "rows.json"])
def test_a_cut_rows_or_base_file_is_named(tmp_path, name):
    cfg = dataclasses.asdict(SelfImproveConfig(smoke=True, output_dir=str(tmp_path), workers=1, report=False))
    seed = tmp_path / "seed0"
    _cut(seed / "base.json", {"seed": 0, "round": 0, "acc_id": 0.5})
    if name == "rows.json":
        _cut(seed / "qdc" / "replace" / "rows.json", [{"seed": 0, "round": 0}])
    path = seed / "base.json" if name == "base.json" else seed / "qdc" / "replace" / "rows.json"
    job = (lambda: _base_job(cfg, 0)) if name == "base.json" else (lambda: _arm_job(cfg, 0, "qdc", "replace"))
    with pytest.raises(ValueError) as info:
        job()
    assert f"{path} is not valid JSON" in str(info.value) and "Delete that file" in str(info.value)


def test_json_writes_are_atomic_and_keep_the_umask(tmp_path, monkeypatch):
    path = tmp_path / "rows.json"
    write_json(path, [1, 2])
    old = os.umask(0o027)
    try:
        write_json(path, [3])
    finally:
        os.umask(old)
    assert read_json(path) == [3] and sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, [4])
    assert read_json(path) == [3] and sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]
