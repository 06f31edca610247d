"""Recipes end to end in a smoke mode: the built-in task, the baseline, TRL, and the hub path on local files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import build_gpt2

from qdc_trainer.config import load_config
from qdc_trainer.run import train_recipe

ROOT = Path(__file__).resolve().parent.parent

WORDS = "the cat sat on mat a dog ran in park first add to get then multiply by answer is".split()


def test_hub_recipe_loading_path_on_local_files(tokenizer, tmp_path):
    """The hub recipe's code path (from_pretrained + load_dataset) with a local model folder and a local JSON file."""
    model_dir = tmp_path / "model"
    build_gpt2(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = [{"instruction": " ".join(WORDS[i % 7 : i % 7 + 3]), "output": " ".join(WORDS[i % 5 : i % 5 + 4])} for i in range(40)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = load_config(ROOT / "recipes" / "hub" / "sft_smollm2_alpaca.yaml", [
        "--model_name_or_path", str(model_dir), "--dataset_name", "json", "--data_files", str(data),
        "--embedder", "hashing", "--n_clusters", "3", "--max_tokens", "32", "--probes", "2", "--monitor_max_new_tokens", "4",
        "--monitor_every", "2", "--logging_steps", "2", "--max_steps", "4", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
        "--bf16", "false", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no", "--report", "false",
        "--output_dir", str(tmp_path / "run"),
    ])
    result = train_recipe(cfg)
    assert result["results"]["global_step"] == 4
    run = tmp_path / "run"
    assert (run / "trainer_state.json").is_file() and (run / "model.safetensors").is_file()
    state = json.loads((run / "trainer_state.json").read_text())
    keys = {k for e in state["log_history"] for k in e}
    assert {"qdc/gen/per_input/distinct_2", "qdc/sampler/ess_ratio", "qdc/train/entropy"} <= keys
    described = json.loads((run / "qdc_run.json").read_text())
    assert described["model"]["model_name_or_path"] == str(model_dir) and described["data"]["prompt_field"] == "instruction"


def test_a_missing_column_is_named(tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    build_gpt2(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"question": "a", "output": "b"}) for _ in range(8)))
    cfg = load_config(None, ["--model_name_or_path", str(model_dir), "--task", "dataset", "--dataset_name", "json",
                             "--data_files", str(data), "--quality", "none", "--prompt_field", "instruction",
                             "--completion_field", "output", "--output_dir", str(tmp_path / "run"), "--use_cpu", "true"])
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
        result = _qdc("train", "--config", f"recipes/arithmetic/{name}.yaml", "--smoke", "true",
                      "--output_dir", str(out / name), "--report_to", "none")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        runs[name] = (out / name, result.stdout)
    return runs


def test_the_main_recipe_runs_end_to_end_and_writes_its_report(smoke_runs):
    run, stdout = smoke_runs["sft_qdc"]
    assert f"report: {run / 'report' / 'report.html'}" in stdout  # it says where the report is
    for name in ("report.html", "report.md", "training.png", "diversity.png", "generation.png", "sampler.png"):
        assert (run / "report" / name).stat().st_size > 500, name
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 4 and 0.0 <= results["accuracy_validation"] <= 1.0 and "accuracy_test_ood" in results
    state = json.loads((run / "trainer_state.json").read_text())
    keys = {k for e in state["log_history"] for k in e}
    assert {"qdc/gen/per_input/distinct_2", "qdc/gen/quality", "qdc/sampler/quality_trained", "qdc/collapse/level"} <= keys
    # the tiny tokenizer went through save_pretrained / from_pretrained
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(run / "tokenizer").decode(AutoTokenizer.from_pretrained(run)("1 + 2")["input_ids"],
                                                                   skip_special_tokens=True) == "1 + 2"


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
    result = _qdc("profile", "--config", "recipes/arithmetic/sft_qdc.yaml", "--smoke", "true", "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("profile.html", "quality_hist.png", "complexity_hist.png", "cluster_sizes.png", "quality_diversity.png"):
        assert (tmp_path / "profile" / name).is_file(), name


def test_the_trl_recipe_runs(tmp_path):
    cfg = load_config(ROOT / "recipes" / "arithmetic" / "sft_trl.yaml",
                      ["--smoke", "true", "--output_dir", str(tmp_path), "--report", "false", "--report_to", "none"])
    result = train_recipe(cfg)
    assert result["results"]["global_step"] == 4
    keys = {k for e in json.loads((tmp_path / "trainer_state.json").read_text())["log_history"] for k in e}
    assert {"qdc/gen/per_input/distinct_2", "qdc/sampler/ess_ratio"} <= keys
