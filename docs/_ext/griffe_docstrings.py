"""A Griffe extension for the API reference: the package's docstrings, written for Python's help() and doctest,
rendered as Markdown.

- a block of ``>>>`` lines with their expected output becomes a ``pycon`` code block (doctest needs no fence, and
  Markdown would read ``[0, 1]`` as a link);
- a Sphinx role (``:class:`QDCSampler```, ``:func:`~qdc_trainer.data.select_budget```) becomes a code span of the
  name it shows.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc|const):`~?([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(1)
    shown = target.rsplit(".", 1)[-1] if match.group(0).split("`", 1)[1].startswith("~") else target
    return f"`{shown}`"


def markdown(text: str) -> str:
    """``text`` with its doctest blocks fenced and its Sphinx roles as code spans."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += [f"{indent}```pycon", *block, f"{indent}```"]
            continue
        if line.lstrip().startswith(("```", "::")) or not line.strip():
            out.append(line)
        else:
            out.append(_ROLE.sub(_role, line))
        i += 1
    return "\n".join(out)


class DoctestAndRoles(griffe.Extension):
    """Apply :func:`markdown` to every docstring Griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
