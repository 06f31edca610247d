"""The old import paths of moved modules: one alias map, each old path the moved module, with a FutureWarning."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import qdc_trainer
from qdc_trainer import _aliases

ROOT = Path(__file__).resolve().parent.parent
NINE = {"config", "run", "monitor", "collapse", "_logging", "sampler", "collator", "selection", "self_improve"}


def test_the_nine_old_paths_are_one_map_and_no_files():
    assert set(_aliases.OLD_PATHS) == NINE
    for old, new in _aliases.OLD_PATHS.items():
        assert not (ROOT / "qdc_trainer" / f"{old}.py").exists(), old  # out of sight: no module file at the top
        assert importlib.import_module(f"qdc_trainer.{new}").__name__ == f"qdc_trainer.{new}"
    assert "--ignore=qdc_trainer/monitor.py" not in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("old", sorted(NINE))
def test_an_old_attribute_of_the_package_is_the_moved_module_with_a_future_warning(old, monkeypatch):
    monkeypatch.delitem(vars(qdc_trainer), old, raising=False)  # not yet read in this process
    new = importlib.import_module(f"qdc_trainer.{_aliases.OLD_PATHS[old]}")
    with pytest.warns(FutureWarning, match=rf"qdc_trainer\.{old} is deprecated: import {new.__name__} instead"):
        assert getattr(qdc_trainer, old) is new
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(qdc_trainer, old) is new  # warned once; then a plain attribute
    with pytest.raises(AttributeError, match="has no attribute 'sampler_v2'"):
        qdc_trainer.sampler_v2  # noqa: B018


def test_each_old_import_form_in_a_fresh_interpreter():
    """First thing in a new process: the module is the moved one, keeps its own name and spec, warns at the line
    that imports it, and patching the old path patches the module in use."""
    code = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import qdc_trainer.sampler
    from qdc_trainer.collapse import SeriesDetector
    from qdc_trainer import selection
    import qdc_trainer.config as config
import qdc_trainer.data.sampler as sampler, qdc_trainer.callbacks.series as series, qdc_trainer.cli.config as new_config
qdc_trainer.sampler._MAX_OPEN_BLOCKS = 3
print(json.dumps({
    "same": [qdc_trainer.sampler is sampler, SeriesDetector is series.SeriesDetector,
             selection is qdc_trainer.data.selection, config is new_config],
    "spec": sampler.__spec__.name, "patched": sampler._MAX_OPEN_BLOCKS,
    "warnings": [(w.category.__name__, str(w.message).split(" is deprecated")[0], w.lineno, w.filename)
                 for w in caught],
}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["same"] == [True, True, True, True]
    assert got["spec"] == "qdc_trainer.data.sampler" and got["patched"] == 3
    assert got["warnings"] == [
        ["FutureWarning", "qdc_trainer.sampler", 5, "<string>"],
        ["FutureWarning", "qdc_trainer.collapse", 6, "<string>"],
        ["FutureWarning", "qdc_trainer.selection", 7, "<string>"],
        ["FutureWarning", "qdc_trainer.config", 8, "<string>"],
    ]


def test_the_package_itself_uses_no_old_path():
    offenders = []
    for path in (ROOT / "qdc_trainer").rglob("*.py"):
        dots = "." * len(path.relative_to(ROOT / "qdc_trainer").parts)  # the relative import of the package root
        text = path.read_text()
        for old in NINE:
            for form in (f"from {dots}{old} import", f"from qdc_trainer.{old} import", f"import qdc_trainer.{old}\n"):
                if form in text:
                    offenders.append((path.relative_to(ROOT).as_posix(), form))
    assert offenders == []
