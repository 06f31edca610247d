"""HTML and Markdown helpers of the report pages: escaping, tables, the page head, number formatting."""

from __future__ import annotations

import datetime as _dt
import html
import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["escape_html", "escape_md", "fmt", "html_head", "html_table", "md_table", "now"]


def fmt(value: Any) -> str:
    """A number for a table: integers as such, else 4 significant digits; ``n/a`` for None.

    >>> fmt(3.0), fmt(0.123456), fmt(None), fmt(float("nan"))
    ('3', '0.1235', 'n/a', 'nan')
    """
    if value is None:
        return "n/a"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def now() -> str:
    """The time a page was generated, to the minute."""
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def escape_html(text: Any) -> str:
    """Text safe in HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def escape_md(text: Any) -> str:
    """Text safe in a Markdown table cell: HTML escaped, Markdown punctuation backslashed, on one line.

    >>> escape_md("a|b <i>\\n*c*")
    'a\\\\|b &lt;i&gt;<br>\\\\*c\\\\*'
    """
    escaped = html.escape(str(text), quote=False)
    escaped = re.sub(r"([\\`*_\[\]|#~])", r"\\\1", escaped)
    return escaped.replace("\r\n", "\n").replace("\n", "<br>")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table with escaped cells; an empty cell shows as *(empty)*."""
    lines = ["| " + " | ".join(escape_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape_md(c) if c != "" else "*(empty)*" for c in row) + " |" for row in rows]
    return lines


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    first_cells: Sequence[str] | None = None,
    wide_last: int = 0,
) -> str:
    """An HTML table with escaped cells; ``first_cells`` are trusted HTML put before each row's first cell,
    the last ``wide_last`` cells of each row are shown as preformatted text."""
    head = "".join(f"<th>{escape_html(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            prefix = first_cells[r] if first_cells is not None and c == 0 else ""
            klass = " class='text'" if wide_last and c >= len(row) - wide_last else ""
            content = escape_html(cell) if cell != "" else "<span class='muted'>(empty)</span>"
            cells.append(f"<td{klass}>{prefix}{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_head(title: str) -> str:
    """The start of a self-contained page, up to and including ``<body>``: its title and style sheet."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape_html(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #222; line-height: 1.45; }}
h1 {{ margin-bottom: 0.2rem; }} h2 {{ margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }}
table {{ border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} tbody tr:nth-child(even) {{ background: #fafafa; }}
td.text {{ white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.85rem; max-width: 40rem; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
pre {{ background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.85rem; }}
.muted {{ color: #777; }} .caption {{ color: #444; max-width: 70rem; }}
.note {{ background: #fff6dd; border-left: 4px solid #e0b000; padding: 0.3rem 0.6rem; }}
.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; margin-right: 0.4em;
          vertical-align: -0.1em; }}
</style></head><body>"""
