"""The old import paths of moved modules, in one map: ``qdc_trainer.sampler`` is ``qdc_trainer.data.sampler``.

Importing an old path, or reading it as an attribute of the package (``from qdc_trainer import sampler``), gives
the moved module itself (the same object, so patching one patches the other) with a ``FutureWarning`` that names
the new path. The old paths will be removed in a later minor release, as the deprecation policy in CHANGELOG.md
says; nothing else in the package uses them.

>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     old = resolve("collapse")  # what ``import qdc_trainer.collapse`` gives, the first time
>>> import qdc_trainer.callbacks.collapse as new
>>> old is new, caught[0].category.__name__
(True, 'FutureWarning')
>>> str(caught[0].message)
'qdc_trainer.collapse is deprecated: import qdc_trainer.callbacks.collapse instead (the same module)'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

OLD_PATHS: dict[str, str] = {
    "config": "cli.config",
    "run": "cli.run",
    "monitor": "callbacks.monitor",
    "collapse": "callbacks.collapse",
    "_logging": "callbacks._logging",
    "sampler": "data.sampler",
    "collator": "data.collator",
    "selection": "data.selection",
    "self_improve": "experiments.self_improve",
}
"""Old module name below ``qdc_trainer`` -> its new name below ``qdc_trainer``."""

_PACKAGE = __name__.rpartition(".")[0]


def resolve(name: str, stacklevel: int = 3) -> ModuleType:
    """The moved module for an old name (``"sampler"``), with a ``FutureWarning`` that names the new path."""
    new = f"{_PACKAGE}.{OLD_PATHS[name]}"
    warnings.warn(
        f"{_PACKAGE}.{name} is deprecated: import {new} instead (the same module)", FutureWarning, stacklevel=stacklevel
    )
    return importlib.import_module(new)


class _OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``qdc_trainer.<old>`` and loads it as the moved module (no file of the old name exists)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        package, _, name = fullname.rpartition(".")
        if package == _PACKAGE and name in OLD_PATHS:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def __init__(self) -> None:
        self._specs: dict[str, Any] = {}

    def create_module(self, spec: Any) -> ModuleType:
        # the warning names the importing line (warnings skips the import machinery's frames)
        module = resolve(spec.name.rpartition(".")[2], stacklevel=3)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system set __spec__ to the old name's spec on the moved module: give it its own back
        for old, spec in self._specs.items():
            if spec is not None and spec.name == module.__name__:
                module.__spec__ = spec
                del self._specs[old]
                return


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once (before any finder that could find a stale file of an old
    name, such as an editable install of an earlier version)."""
    if not any(isinstance(finder, _OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldPathFinder())
