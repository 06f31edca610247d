"""The recipes that ship inside the package, found by name.

The packaged recipes live in ``qdc_trainer/recipes/<group>/<name>.yaml`` (package data, so an installed wheel has
them). A recipe's name is its path below that folder without ``.yaml``: ``arithmetic/sft_qdc``. Wherever a recipe
file is expected (``qdc train --config``, ``qdc profile --config``, ``qdc self-improve --config``), a path that does
not exist is looked up as a packaged recipe's name, with or without ``.yaml``, and with or without the leading
``recipes/`` of a source checkout's former layout (``recipes/arithmetic/sft_qdc.yaml``). A file on disk always wins
over a packaged recipe of the same name. ``qdc recipes`` lists them with their one-line descriptions (each recipe's
first comment line), and ``qdc recipes --show NAME`` prints one, to copy and edit.

>>> "arithmetic/sft_qdc" in packaged_recipes()
True
>>> resolve_recipe("arithmetic/sft_qdc") == resolve_recipe("recipes/arithmetic/sft_qdc.yaml")
True
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RECIPES_DIR", "packaged_recipes", "recipe_description", "resolve_recipe"]

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
"""The folder of the packaged recipes (``qdc_trainer/recipes``)."""


def packaged_recipes() -> dict[str, Path]:
    """Every packaged recipe, by name (``"arithmetic/sft_qdc"``), in name order."""
    return {p.relative_to(RECIPES_DIR).with_suffix("").as_posix(): p for p in sorted(RECIPES_DIR.rglob("*.yaml"))}


def recipe_description(path: str | os.PathLike) -> str:
    """The first comment line of a recipe file, without its ``#`` (empty when the file does not start with one)."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    return first.lstrip("#").strip() if first.startswith("#") else ""


def resolve_recipe(path: str | os.PathLike | None) -> str | None:
    """The file a ``--config`` value names: the path itself when it exists, else the packaged recipe of that name.

    ``arithmetic/sft_qdc``, ``arithmetic/sft_qdc.yaml`` and ``recipes/arithmetic/sft_qdc.yaml`` all name the
    packaged ``arithmetic/sft_qdc``. A value that is neither is returned unchanged, for the caller's "does not
    exist" error. None stays None (no recipe file).
    """
    if path is None:
        return None
    given = os.fspath(path)
    if os.path.exists(given):
        return given
    name = given.replace(os.sep, "/").removeprefix("./").removeprefix("recipes/")
    for suffix in (".yaml", ".yml"):
        name = name.removesuffix(suffix)
    found = packaged_recipes().get(name)
    return str(found) if found is not None else given


def format_recipes() -> str:
    """The listing ``qdc recipes`` prints: one line per packaged recipe, its name and its description."""
    recipes = packaged_recipes()
    width = max(map(len, recipes))
    lines = [f"{name:<{width}}  {recipe_description(path)}" for name, path in recipes.items()]
    lines += [
        "",
        "Run one with `qdc train --config NAME` (flags after it override its keys); "
        "`qdc recipes --show NAME` prints it, to copy and edit.",
    ]
    return "\n".join(lines)
