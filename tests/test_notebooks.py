"""The notebooks in notebooks/: committed without outputs, and each one runs headless end to end.

Every ``notebooks/*.ipynb`` is executed with nbclient in its small mode
(``QDC_NOTEBOOK_SMALL=1``), from a temporary working directory, with
``QDC_NOTEBOOK_OUT`` pointing at an empty temporary folder for what it writes.
The kernel is this interpreter's ipykernel: a ``python3`` kernelspec for
``sys.executable`` is written into a temporary ``JUPYTER_PATH``, which Jupyter
searches before any user or system kernelspec. A notebook listed in ``CHECKS``
has its results checked too.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300
"""Seconds a cell may run in small mode (each takes seconds)."""
KERNEL_NAME = "python3"


def _code_cells(nb: dict) -> list[dict]:
    return [cell for cell in nb["cells"] if cell["cell_type"] == "code"]


def _outputs(nb: dict) -> list[dict]:
    return [output for cell in _code_cells(nb) for output in cell.get("outputs", [])]


# --------------------------------------------------------------------------- committed notebooks


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebook in {NOTEBOOKS_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path: Path):
    """No outputs and no execution counts in git, nbformat 4, the python3 kernel."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    assert nb["metadata"].get("kernelspec", {}).get("name") == KERNEL_NAME
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs or execution counts; clear them before committing"
    assert _code_cells(nb), f"{path.name} has no code cell"


# --------------------------------------------------------------------------- executed notebooks


def _check_quickstart(nb: dict, out: Path) -> None:
    """01_quickstart: the run, its logs, both reports and the results it writes, and the figures shown inline."""
    run = out / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["mode"] == "small"
    assert results["global_step"] == results["max_steps"] > 0  # trained to the end: the detector did not stop it
    for key in ("accuracy_before", "accuracy_validation", "accuracy_test_ood"):
        assert 0.0 <= results[key] <= 1.0, (key, results[key])

    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    logged = {key for entry in history for key in entry}
    for key in (
        "loss",
        "eval_loss",
        "qdc/train/entropy",
        "qdc/gen/quality",
        "qdc/gen/across_input/distinct_2",
        "qdc/sampler/quality_trained",
        "qdc/sampler/ess_ratio",
    ):
        assert key in logged, f"{key} was never logged"
    monitor_steps = sorted({entry["step"] for entry in history if "qdc/gen/quality" in entry})
    assert monitor_steps[0] == 0 and len(monitor_steps) >= 2, monitor_steps  # before training, and during it

    samples = [json.loads(line) for line in (run / "qdc_generations.jsonl").read_text().splitlines() if line.strip()]
    assert {s["step"] for s in samples} == set(monitor_steps)
    assert (run / "model.safetensors").is_file()

    profile = out / "profile"
    report = run / "report"
    expected = [
        profile / name
        for name in (
            "profile.html",
            "quality_hist.png",
            "complexity_hist.png",
            "cluster_sizes.png",
            "quality_diversity.png",
        )
    ]
    expected += [
        report / name for name in ("report.html", "training.png", "generation.png", "diversity.png", "sampler.png")
    ]
    missing = [str(p.relative_to(out)) for p in expected if not p.is_file()]
    assert not missing, f"not written: {missing}"
    shown = sum("image/png" in o.get("data", {}) for o in _outputs(nb))
    assert shown >= len([p for p in expected if p.suffix == ".png"]), f"only {shown} figures shown inline"

    final = _code_cells(nb)[-1]["outputs"]
    assert any("accuracy_validation" in o.get("data", {}).get("text/plain", "") for o in final), (
        "the last cell does not show the results"
    )


def _check_self_improvement(nb: dict, out: Path) -> None:
    """02_self_improvement: every arm and round measured, the table and figures written and shown, the trade-off."""
    run = out / "run"
    rows = json.loads((run / "results.json").read_text())
    arms = {r["arm"] for r in rows}
    assert arms == {"quality", "qdc", "reservoir"}
    rounds = max(r["round"] for r in rows)
    assert rounds >= 2 and {(r["arm"], r["round"]) for r in rows} == {(a, k) for a in arms for k in range(rounds + 1)}
    for r in rows:
        assert 0.0 <= r["valid"] <= 1.0 and 0.0 <= r["acc_id"] <= 1.0, r
    assert (run / "results.md").is_file() and (run / "overview.png").is_file() and (out / "tradeoff.png").is_file()
    shown = sum("image/png" in o.get("data", {}) for o in _outputs(nb))
    assert shown >= 2, f"only {shown} figures shown inline"
    html = "".join(o.get("data", {}).get("text/html", "") for o in _outputs(nb))
    assert "tradeoff=0.0" in html and "most confident verified" in html, "the trade-off table is not shown"
    printed = "".join(o.get("text", "") for o in _code_cells(nb)[-1]["outputs"])
    assert "claim quality_collapses" in printed and "claim qdc_beats_quality_id" in printed


CHECKS: dict[str, Callable[[dict, Path], None]] = {
    "01_quickstart.ipynb": _check_quickstart,
    "02_self_improvement.ipynb": _check_self_improvement,
}
"""Notebook-specific checks of an executed notebook and of what it wrote into QDC_NOTEBOOK_OUT."""


@pytest.fixture
def venv_kernel(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``python3`` kernelspec that runs this interpreter, found first through ``JUPYTER_PATH``."""
    from ipykernel.kernelspec import write_kernel_spec

    jupyter = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(jupyter / "kernels" / KERNEL_NAME)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    return KERNEL_NAME


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, venv_kernel: str, monkeypatch: pytest.MonkeyPatch):
    import nbformat
    from nbclient import NotebookClient

    out = tmp_path / "out"
    work = tmp_path / "work"
    work.mkdir()
    for name, value in {
        "QDC_NOTEBOOK_SMALL": "1",
        "QDC_NOTEBOOK_OUT": str(out),
        "QDC_NOTEBOOK_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }.items():
        monkeypatch.setenv(name, value)

    nb = nbformat.read(path, as_version=4)
    n_code = len(_code_cells(nb))
    # one more cell, in memory only: which interpreter ran the notebook
    nb.cells.append(nbformat.v4.new_code_cell("import json, sys\nprint(json.dumps({'prefix': sys.prefix}))"))
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name=venv_kernel, resources={"metadata": {"path": str(work)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, when a cell fails

    cells = _code_cells(nb)
    assert [c["execution_count"] for c in cells] == list(range(1, n_code + 2)), "not every cell ran, in order"
    errors = [o for o in _outputs(nb) if o["output_type"] == "error"]
    assert not errors, errors
    printed = "".join(o["text"] for o in cells[-1]["outputs"] if o.get("name") == "stdout")
    probe = json.loads(printed)
    assert probe["prefix"] == sys.prefix, f"the notebook ran in {probe['prefix']}, not in this environment {sys.prefix}"

    nb.cells.pop()
    check = CHECKS.get(path.name)
    if check is not None:
        check(nb, out)
    else:  # a notebook without its own check: it must at least show something
        assert any(c["outputs"] for c in _code_cells(nb)), f"{path.name} ran but shows no output"
