"""The run page: training runs side by side, their figures, logged values, collapse verdict and samples."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..callbacks.generation_metrics import SAMPLES_FILE
from .figures import FIGURES, color, figure_class, plot_run_group
from .logs import COLLAPSE_KEY, GROUPS, RUN_CONFIG_FILE, RunLog, collapse_culprits, is_number, key_group, load_run
from .page import escape_html, escape_md, fmt, html_head, html_table, md_table, now

__all__ = ["RUN_PAGE", "write_run_report"]

RUN_PAGE = "report"
"""The page's file name, without ``.html`` / ``.md``."""
SAMPLE_PROMPTS = 4
"""Prompts shown per run in the samples table (the lowest prompt indices)."""
SAMPLES_PER_PROMPT = 2
"""Samples shown per prompt, at the first and at the last evaluation step."""
NOT_GENERATED = "\u2014"
"""Shown for a sample missing at a step (an empty completion shows as "(empty)")."""
SUMMARY_HEADER = ["key", "points", "first", "last", "min", "max"]


def write_run_report(
    run_dirs: Sequence[str | Path], out_dir: str | Path, *, labels: Sequence[str] | None = None
) -> Path:
    """Compare training runs on one page of plots; returns the path of ``report.html``.

    Each run folder holds the Trainer's ``trainer_state.json`` (or a
    ``checkpoint-*`` folder with one: the latest is read) and optionally the
    generation monitor's ``qdc_generations.jsonl`` and a ``qdc_run.json`` (any JSON
    object describing the run, shown as is).

    Written into ``out_dir``: ``report.html`` (self-contained, the figures by
    relative path), ``report.md`` (the same page in Markdown) and one PNG per group
    of logged keys that was found: ``training.png`` (``loss``, ``eval_loss``,
    ``qdc/train/entropy``), ``diversity.png`` (``qdc/gen/per_input/*`` and
    ``qdc/gen/across_input/*``), ``generation.png`` (length, entropy, repetition,
    empty rate, quality of the generations), ``sampler.png`` (``qdc/sampler/*``),
    ``collapse.png`` (``qdc/collapse/*``) and ``other.png`` (any other ``qdc/``
    key). Runs share the axes, one colour each; where ``qdc/collapse/level`` first
    reaches 1 and 2 is marked on each of the run's curves.

    The page lists the runs (label, folder, steps, final loss, collapse steps), a
    table per run of every logged key (first, last, min and max), the run's
    description, and generation samples at the first and the last evaluation.

    Args:
        run_dirs: one or more run folders (a ``trainer_state.json`` path also works).
        out_dir: the folder to write to (created if needed).
        labels: a name per run; default the folder names (made unique).

    Raises:
        FileNotFoundError: a folder does not exist or holds no trainer state (the message names it).
        ValueError: no run, or ``labels`` of the wrong length.
        ImportError: matplotlib is missing (``pip install 'qdc-trainer[plot]'``).
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("write_run_report needs at least one run folder")
    if labels is not None:
        labels = [str(label) for label in labels]
        if len(labels) != len(run_dirs):
            raise ValueError(f"got {len(labels)} labels for {len(run_dirs)} run folders")
    figure_class()  # fail early, before reading anything, when matplotlib is missing
    runs = [load_run(d, None if labels is None else labels[i]) for i, d in enumerate(run_dirs)]
    if labels is None:
        for run, label in zip(runs, _unique([run.label for run in runs])):
            run.label = label
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for name, group, title, caption in FIGURES:
        if plot_run_group(runs, group, out / name) is not None:
            figures.append((name, title, caption))
    page = out / f"{RUN_PAGE}.html"
    page.write_text(_run_html(runs, figures), encoding="utf-8")
    (out / f"{RUN_PAGE}.md").write_text(_run_markdown(runs, figures), encoding="utf-8")
    return page


def _run_overview(runs: Sequence[RunLog]) -> tuple[list[str], list[list[str]]]:
    header = [
        "run",
        "folder",
        "trainer state",
        "steps",
        "final loss",
        "final eval loss",
        "collapse warning",
        "collapse",
    ]
    rows = []
    for run in runs:
        final_loss = run.last("loss") if "loss" in run.series else run.last("train_loss")
        inside = run.folder.is_dir() and run.state_file.is_relative_to(run.folder)
        state = run.state_file.relative_to(run.folder) if inside else run.state_file.name
        rows.append(
            [
                run.label,
                str(run.folder),
                str(state),
                str(run.global_step),
                fmt(final_loss),
                fmt(run.last("eval_loss")),
                _collapse_text(run, run.warning_step),
                _collapse_text(run, run.collapse_step),
            ]
        )
    return header, rows


def _collapse_text(run: RunLog, step: int | None) -> str:
    if step is not None:
        return f"step {step}"
    return "none" if COLLAPSE_KEY in run.series else "not logged"


def _collapse_sentence(run: RunLog) -> str:
    """Plain text: when the detector warned and declared collapse, and on which series."""
    parts = []
    for name, step, level in (("Collapse warning", run.warning_step, 1), ("collapse", run.collapse_step, 2)):
        culprits = collapse_culprits(run, step, level)
        parts.append(f"{name}: {_collapse_text(run, step)}" + (f" ({', '.join(culprits)})" if culprits else ""))
    return "; ".join(parts) + "."


def _summary_rows(run: RunLog) -> list[list[str]]:
    def order(key: str) -> tuple[int, str]:
        group = key_group(key)
        return (GROUPS.index(group) if group else len(GROUPS), key)

    rows = []
    for key in sorted(run.series, key=order):
        steps, values = run.series[key]
        rows.append(
            [
                key,
                str(len(values)),
                f"{fmt(values[0])} (step {steps[0]})",
                f"{fmt(values[-1])} (step {steps[-1]})",
                fmt(values.min()),
                fmt(values.max()),
            ]
        )
    return rows


def _sample_comparison(samples: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[list[str]]]:
    """Samples of a few prompts at the first and the last evaluation step: (steps, rows of prompt, #, completions)."""
    if not samples:
        return [], []
    steps = sorted({int(r["step"]) for r in samples})
    shown = [steps[0]] if len(steps) == 1 else [steps[0], steps[-1]]
    at: dict[tuple[int, int, int], Mapping[str, Any]] = {}
    for r in samples:
        key = (int(r["step"]), _int(r.get("prompt_index")), _int(r.get("sample")))
        at.setdefault(key, r)
    prompts = sorted({p for s, p, _ in at if s == steps[0]})[:SAMPLE_PROMPTS]
    rows = []
    for p in prompts:
        for j in range(SAMPLES_PER_PROMPT):
            cells = [at.get((s, p, j)) for s in shown]
            if not any(cells):
                continue
            prompt = next(str(c.get("prompt", "")) for c in cells if c)
            rows.append([prompt, str(j)] + [str(c.get("completion", "")) if c else NOT_GENERATED for c in cells])
    return shown, rows


def _run_html(runs: Sequence[RunLog], figures: Sequence[tuple[str, str, str]]) -> str:
    parts = [
        html_head("QDC training report"),
        "<h1>QDC training report</h1>",
        f"<p class='muted'>{len(runs)} run(s), generated {now()}.</p>",
        "<h2>Runs</h2>",
    ]
    header, rows = _run_overview(runs)
    swatches = [f"<span class='swatch' style='background:{color(i)}'></span>" for i in range(len(runs))]
    parts.append(html_table(header, rows, first_cells=swatches))
    if not figures:
        parts.append("<p>None of the runs logged a key that a figure shows.</p>")
    for name, title, caption in figures:
        parts += [
            f"<h2>{escape_html(title)}</h2>",
            f"<p class='caption'>{escape_html(caption)}</p>",
            f"<a href='{escape_html(name)}'><img src='{escape_html(name)}' alt='{escape_html(title)}'></a>",
        ]
    for i, run in enumerate(runs):
        parts.append(f"<h2><span class='swatch' style='background:{color(i)}'></span>Run {escape_html(run.label)}</h2>")
        parts.append(f"<p class='muted'>{escape_html(str(run.folder))}</p>")
        for note in run.notes:
            parts.append(f"<p class='note'>{escape_html(note)}</p>")
        parts.append(f"<p><b>{escape_html(_collapse_sentence(run))}</b></p>")
        if run.config is not None:
            parts += [
                f"<h3>Run description ({RUN_CONFIG_FILE})</h3>",
                f"<pre>{escape_html(json.dumps(run.config, indent=2, sort_keys=True, default=str))}</pre>",
            ]
        parts.append("<h3>Logged values</h3>")
        summary = _summary_rows(run)
        parts.append(html_table(SUMMARY_HEADER, summary) if summary else "<p>Nothing was logged.</p>")
        shown, sample_rows = _sample_comparison(run.samples)
        if sample_rows:
            parts.append("<h3>Generation samples</h3>")
            parts.append(
                html_table(
                    ["prompt", "sample"] + [f"completion at step {s}" for s in shown], sample_rows, wide_last=len(shown)
                )
            )
        else:
            parts.append(f"<p class='muted'>No generation samples ({SAMPLES_FILE} not found or empty).</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _run_markdown(runs: Sequence[RunLog], figures: Sequence[tuple[str, str, str]]) -> str:
    parts = ["# QDC training report", "", f"{len(runs)} run(s), generated {now()}.", "", "## Runs", ""]
    header, rows = _run_overview(runs)
    parts += md_table(header, rows)
    for name, title, caption in figures:
        parts += ["", f"## {title}", "", escape_md(caption), "", f"![{title}]({name})"]
    for run in runs:
        parts += ["", f"## Run {escape_md(run.label)}", "", f"`{run.folder}`", ""]
        parts += [f"- {escape_md(note)}" for note in run.notes]
        parts += [f"**{escape_md(_collapse_sentence(run))}**", ""]
        if run.config is not None:
            parts += [
                f"### Run description ({RUN_CONFIG_FILE})",
                "",
                "```json",
                json.dumps(run.config, indent=2, sort_keys=True, default=str).replace("```", "'''"),
                "```",
                "",
            ]
        summary = _summary_rows(run)
        parts += ["### Logged values", ""] + (md_table(SUMMARY_HEADER, summary) if summary else ["Nothing was logged."])
        shown, sample_rows = _sample_comparison(run.samples)
        if sample_rows:
            parts += ["", "### Generation samples", ""]
            parts += md_table(["prompt", "sample"] + [f"completion at step {s}" for s in shown], sample_rows)
    return "\n".join(parts) + "\n"


def _int(value: Any) -> int:
    return int(value) if is_number(value) else -1


def _unique(labels: Sequence[str]) -> list[str]:
    """Labels made unique with a ``#2``, ``#3``... suffix on repeats."""
    seen: Counter[str] = Counter()
    out = []
    for label in labels:
        seen[label] += 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out
