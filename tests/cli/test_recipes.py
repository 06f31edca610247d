"""Recipes end to end in a smoke mode: the built-in task, the baseline, TRL, and the hub path on local files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import build_gpt2

from qdc_trainer.cli.config import load_config
from qdc_trainer.cli.recipes import RECIPES_DIR
from qdc_trainer.cli.run import train_recipe

ROOT = Path(__file__).resolve().parents[2]

WORDS = "the cat sat on mat a dog ran in park first add to get then multiply by answer is".split()


def test_hub_recipe_loading_path_on_local_files(tokenizer, tmp_path):
    """The hub recipe's code path (from_pretrained + load_dataset) with a local model folder and a local JSON file."""
    model_dir = tmp_path / "model"
    build_gpt2(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = [
        {"instruction": " ".join(WORDS[i % 7 : i % 7 + 3]), "output": " ".join(WORDS[i % 5 : i % 5 + 4])}
        for i in range(40)
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = load_config(
        RECIPES_DIR / "hub" / "sft_smollm2_alpaca.yaml",
        [
            "--model_name_or_path",
            str(model_dir),
            "--dataset_name",
            "json",
            "--data_files",
            str(data),
            "--embedder",
            "hashing",
            "--n_clusters",
            "3",
            "--max_tokens",
            "32",
            "--probes",
            "2",
            "--monitor_max_new_tokens",
            "4",
            "--monitor_every_n_steps",
            "2",
            "--logging_steps",
            "2",
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "4",
            "--gradient_accumulation_steps",
            "1",
            "--bf16",
            "false",
            "--use_cpu",
            "true",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
            "--report",
            "false",
            "--output_dir",
            str(tmp_path / "run"),
        ],
    )
    result = train_recipe(cfg)
    assert result["results"]["global_step"] == 4
    run = tmp_path / "run"
    assert (run / "trainer_state.json").is_file() and (run / "model.safetensors").is_file()
    state = json.loads((run / "trainer_state.json").read_text())
    keys = {k for e in state["log_history"] for k in e}
    assert {"qdc/gen/per_input/distinct_2", "qdc/sampler/ess_ratio", "qdc/train/entropy"} <= keys
    described = json.loads((run / "qdc_run.json").read_text())
    assert (
        described["model"]["model_name_or_path"] == str(model_dir)
        and described["data"]["prompt_field"] == "instruction"
    )
    # the library settings the run used: the recipe's values, the training seed
    assert described["sampler"]["update_every"] == 20 and described["sampler"]["seed"] == cfg.training.seed
    assert described["monitor"]["every_n_steps"] == 2 and described["monitor"]["max_new_tokens"] == 4


def test_a_missing_column_is_named(tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    build_gpt2(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"question": "a", "output": "b"}) for _ in range(8)))
    cfg = load_config(
        None,
        [
            "--model_name_or_path",
            str(model_dir),
            "--task",
            "dataset",
            "--dataset_name",
            "json",
            "--data_files",
            str(data),
            "--quality",
            "none",
            "--prompt_field",
            "instruction",
            "--completion_field",
            "output",
            "--output_dir",
            str(tmp_path / "run"),
            "--use_cpu",
            "true",
        ],
    )
    with pytest.raises(ValueError, match="no column 'instruction'"):
        train_recipe(cfg)


def _qdc(*args, cwd=ROOT):
    import shutil
    import subprocess
    import sys

    exe = shutil.which("qdc", path=str(Path(sys.executable).parent))
    command = [exe] if exe else [sys.executable, "-m", "qdc_trainer.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """The main recipe through the console script, and the baseline, in smoke mode."""
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for name in ("sft_qdc", "sft_baseline"):
        result = _qdc(
            "train",
            "--config",
            f"arithmetic/{name}",
            "--smoke",
            "true",
            "--output_dir",
            str(out / name),
            "--report_to",
            "none",
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        runs[name] = (out / name, result.stdout)
    return runs


def test_the_main_recipe_runs_end_to_end_and_writes_its_report(smoke_runs):
    run, stdout = smoke_runs["sft_qdc"]
    assert f"report: {run / 'report' / 'report.html'}" in stdout  # it says where the report is
    for name in ("report.html", "report.md", "training.png", "diversity.png", "generation.png", "sampler.png"):
        assert (run / "report" / name).stat().st_size > 500, name
    results = json.loads((run / "results.json").read_text())
    assert (
        results["global_step"] == 4 and 0.0 <= results["accuracy_validation"] <= 1.0 and "accuracy_test_ood" in results
    )
    state = json.loads((run / "trainer_state.json").read_text())
    keys = {k for e in state["log_history"] for k in e}
    assert {
        "qdc/gen/per_input/distinct_2",
        "qdc/gen/quality",
        "qdc/sampler/quality_trained",
        "qdc/collapse/level",
    } <= keys
    # the tiny tokenizer went through save_pretrained / from_pretrained
    from transformers import AutoTokenizer

    assert (
        AutoTokenizer.from_pretrained(run / "tokenizer").decode(
            AutoTokenizer.from_pretrained(run)("1 + 2")["input_ids"], skip_special_tokens=True
        )
        == "1 + 2"
    )


def test_the_baseline_has_no_sampler(smoke_runs):
    run, _ = smoke_runs["sft_baseline"]
    keys = {k for e in json.loads((run / "trainer_state.json").read_text())["log_history"] for k in e}
    assert "qdc/gen/per_input/distinct_2" in keys and not any(k.startswith("qdc/sampler/") for k in keys)


def test_report_compares_runs_on_the_same_axes(smoke_runs, tmp_path):
    (qdc_run, _), (baseline, _) = smoke_runs["sft_qdc"], smoke_runs["sft_baseline"]
    result = _qdc("report", str(qdc_run), str(baseline), "--labels", "qdc", "baseline", "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "qdc" in page and "baseline" in page and (tmp_path / "cmp" / "diversity.png").is_file()


def test_profile_writes_figures_and_a_page(tmp_path):
    result = _qdc("profile", "--config", "arithmetic/sft_qdc", "--smoke", "true", "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "profile.html",
        "quality_hist.png",
        "complexity_hist.png",
        "cluster_sizes.png",
        "quality_diversity.png",
    ):
        assert (tmp_path / "profile" / name).is_file(), name


def test_the_trl_recipe_runs(tmp_path):
    cfg = load_config(
        RECIPES_DIR / "arithmetic" / "sft_trl.yaml",
        ["--smoke", "true", "--output_dir", str(tmp_path), "--report", "false", "--report_to", "none"],
    )
    result = train_recipe(cfg)
    assert result["results"]["global_step"] == 4
    keys = {k for e in json.loads((tmp_path / "trainer_state.json").read_text())["log_history"] for k in e}
    assert {"qdc/gen/per_input/distinct_2", "qdc/sampler/ess_ratio"} <= keys


# ------------------------------------------------------------------------- bad data and run folders: exit 2, a message


def _data(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


ROWS = [{"prompt": f"{i} + 1 =", "completion": f" {i + 1}"} for i in range(12)]


def _train(tmp_path, data, *flags):
    """``qdc train`` in this process on a local JSON file with the tiny model; returns (exit code, stderr)."""
    import contextlib
    import io

    from qdc_trainer.cli import main

    args = [
        "train",
        "--task",
        "dataset",
        "--dataset_name",
        "json",
        "--data_files",
        str(data),
        "--quality",
        "none",
        "--n_layer",
        "1",
        "--n_embd",
        "32",
        "--n_head",
        "2",
        "--n_clusters",
        "2",
        "--probes",
        "2",
        "--monitor_num_samples",
        "2",
        "--monitor_max_new_tokens",
        "4",
        "--monitor_every_n_steps",
        "2",
        "--max_tokens",
        "16",
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--output_dir",
        str(tmp_path / "run"),
        *flags,
    ]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    return code, err.getvalue()


def _fails_cleanly(code, err, *parts):
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    for part in parts:
        assert part in err, err[-2000:]


def test_a_data_file_that_is_not_json_is_named(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("prompt,completion\n1 + 1,2\n")
    code, err = _train(tmp_path, data, "--max_steps", "1", "--report", "false")
    _fails_cleanly(code, err, str(data), "cannot be read with the 'json' loader", "JSON parse error")


def test_an_empty_data_file_is_named(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("")
    code, err = _train(tmp_path, data, "--max_steps", "1", "--report", "false")
    _fails_cleanly(code, err, str(data), "holds no rows")


def test_rows_without_text_are_named(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[3]["completion"] = None
    code, err = _train(tmp_path, _data(tmp_path, rows), "--max_steps", "1", "--report", "false")
    _fails_cleanly(
        code, err, "data.jsonl", "column 'completion' (completion_field)", "row 4 (counting from 1) holds None"
    )


def test_a_single_row_is_too_few(tmp_path):
    code, err = _train(tmp_path, _data(tmp_path, ROWS[:1]), "--max_steps", "1", "--report", "false")
    _fails_cleanly(code, err, "data.jsonl", "has 1 row(s); at least 2", "eval_split")
    assert "test_size" not in err


def test_resume_true_takes_the_last_checkpoint_and_a_fresh_run_does_not_mix_with_it(tmp_path):
    data = _data(tmp_path, ROWS)
    code, err = _train(
        tmp_path, data, "--max_steps", "2", "--save_steps", "1", "--report", "false", "--resume_from_checkpoint", "true"
    )
    _fails_cleanly(code, err, "resume_from_checkpoint: true", "holds no checkpoint-<step> folder")
    code, err = _train(tmp_path, data, "--max_steps", "2", "--save_steps", "1", "--report", "false")
    assert code == 0, err[-3000:]
    run = tmp_path / "run"
    assert (run / "checkpoint-2").is_dir()
    # A fresh run into the folder would mix its checkpoints with the earlier run's: refused, saying what to do.
    code, err = _train(tmp_path, data, "--max_steps", "3", "--save_steps", "1", "--report", "false")
    _fails_cleanly(code, err, "checkpoint-1, checkpoint-2", "resume_from_checkpoint: true", "another output_dir")
    # resume_from_checkpoint: true in a recipe continues from the last checkpoint.
    recipe = tmp_path / "resume.yaml"
    recipe.write_text("resume_from_checkpoint: true\n")
    code, err = _train(
        tmp_path, data, "--max_steps", "3", "--save_steps", "1", "--report", "false", "--config", str(recipe)
    )
    assert code == 0, err[-3000:]
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3]  # steps 1-2 come from the checkpoint
    described = json.loads((run / "qdc_run.json").read_text())
    assert described["training"]["resume_from_checkpoint"] == str(run / "checkpoint-2")


def test_a_fresh_run_replaces_the_earlier_run_and_its_report(tmp_path):
    data = _data(tmp_path, ROWS)
    code, err = _train(tmp_path, data, "--max_steps", "2", "--save_strategy", "no")
    assert code == 0, err[-3000:]
    run = tmp_path / "run"
    assert (run / "report" / "sampler.png").is_file() and (run / "qdc_generations.jsonl").is_file()
    # Into the same folder: the plain Trainer (no sampler), no monitor, one step.
    code, err = _train(
        tmp_path,
        data,
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
        "--trainer",
        "plain",
        "--monitor",
        "false",
        "--detector",
        "false",
    )
    assert code == 0, err[-3000:]
    from qdc_trainer.report import load_run

    log = load_run(run)
    assert log.global_step == 1 and log.samples == []  # nothing of the first run's log or samples
    assert not any(k.startswith("qdc/sampler/") or k.startswith("qdc/gen/") for k in log.series)
    assert not (run / "qdc_generations.jsonl").exists()
    assert sorted(p.name for p in (run / "report").iterdir()) == ["report.html", "report.md", "training.png"]
    page = (run / "report" / "report.md").read_text()
    assert "sampler.png" not in page and "qdc/sampler" not in page and "qdc/gen" not in page
    assert json.loads((run / "results.json").read_text())["global_step"] == 1


def test_an_output_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    code, err = _train(tmp_path, _data(tmp_path, ROWS), "--max_steps", "1", "--report", "false")
    _fails_cleanly(code, err, "is a file, not a folder")
