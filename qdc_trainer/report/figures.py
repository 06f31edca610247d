"""Run figures: one PNG per group of logged keys, runs side by side, and the matplotlib helpers.

The figures need matplotlib (the ``plot`` extra). They are drawn with
``matplotlib.figure.Figure`` and saved with ``Figure.savefig``: no pyplot, no
backend switch, so a program that already uses pyplot is left alone. Other plots
of the package (the self-improvement experiment's) use :func:`figure_class`,
:func:`ticker` and :func:`color` from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..callbacks.collapse import LEVEL_KEY as COLLAPSE_KEY
from ..callbacks.collapse import LOG_PREFIX as COLLAPSE_PREFIX
from ..callbacks.generation_metrics import DIVERSITY_METRICS, SCOPES
from ..callbacks.generation_metrics import PREFIX as GEN_PREFIX
from ..data.sampler import TELEMETRY_KEYS as SAMPLER_KEYS
from ..data.sampler import TELEMETRY_PREFIX as SAMPLER_PREFIX
from ..trainer import ENTROPY_KEY
from .logs import GENERATION_KEYS, GROUPS, TRAINING_KEYS, TRL_ENTROPY_KEY, RunLog, key_group, watched_key

__all__ = ["COLORS", "FIGURES", "color", "figure_class", "plot_run_group", "ticker"]

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
"""One colour per run, in order (matplotlib's tab10); more runs cycle through it (:func:`color`)."""
WARNING_STYLE = dict(linestyle="--", linewidth=1.2, alpha=0.8)
COLLAPSE_STYLE = dict(linestyle="-.", linewidth=2.0, alpha=0.9)

TITLES = {
    "loss": "training loss",
    "eval_loss": "evaluation loss",
    ENTROPY_KEY: "training entropy (nats)",
    TRL_ENTROPY_KEY: "training entropy (TRL, nats)",
    **{
        GEN_PREFIX + name: title
        for name, title in (
            ("length", "tokens per generated sample"),
            ("entropy", "generation entropy (nats)"),
            ("repetition", "repeated word 3-grams within a sample"),
            ("empty_rate", "share of empty samples"),
            ("quality", "generation quality (scorer)"),
            ("seconds", "seconds per monitor evaluation"),
        )
    },
    # the monitor's diversity measures, in either scope
    "distinct_1": "distinct-1 (higher = more diverse)",
    "distinct_2": "distinct-2 (higher = more diverse)",
    "self_bleu": "self-BLEU (higher = more repetitive)",
    "compression_ratio": "gzip ratio (higher = more repetitive)",
    "vendi": "Vendi score (higher = more diverse)",
    "cosine_distance": "cosine distance (higher = more diverse)",
    # the sampler's telemetry
    "ess_ratio": "effective sample size / N",
    "weight_entropy": "weight entropy (normalised)",
    "cluster_coverage": "share of clusters trained on",
    "quality": "mean quality: trained vs dataset",
    "complexity": "mean complexity: trained vs dataset",
    "loss_ema": "loss EMA",
    "updates": "weight refreshes",
}
"""Panel titles: by logged key (training, generation) or by name inside a group (diversity, sampler)."""

FIGURES = (
    # file name, group, title, caption
    (
        "training.png",
        "training",
        "Training",
        "Training and evaluation loss, and the entropy of the model's predictive distribution on the training batches.",
    ),
    (
        "diversity.png",
        "diversity",
        "Diversity of the generations",
        "The generation monitor's diversity on its probe prompts: within a prompt (the k samples of one prompt, "
        "averaged over prompts) and across prompts (one sample per prompt). Distinct-n, Vendi and cosine distance "
        "fall, self-BLEU and the gzip ratio rise when the outputs narrow.",
    ),
    (
        "generation.png",
        "generation",
        "Complexity and quality of the generations",
        "Length, entropy, repetition within a sample, share of empty samples, and the scorer's quality when one is "
        "set.",
    ),
    (
        "sampler.png",
        "sampler",
        "QDC sampler telemetry",
        "Effective sample size and weight entropy of the sampling weights, share of clusters trained on since the "
        "previous log, and the mean quality and complexity of the examples trained on (solid) against the dataset's "
        "(dotted).",
    ),
    (
        "collapse.png",
        "collapse",
        "Collapse detector",
        "The detector's level (0 healthy, 1 warning, 2 collapse) and, per watched series, how far its average has "
        "moved from the baseline in the bad direction. Vertical lines on every figure: first warning (dashed) and "
        "collapse (dash-dot), in the run's colour.",
    ),
    ("other.png", "other", "Other qdc/ keys", "Numeric keys under qdc/ that belong to none of the figures above."),
)
"""The run figures in page order: file name, group (of :data:`~qdc_trainer.report.logs.GROUPS`), title, caption."""


# =========================================================================== matplotlib helpers


def figure_class():
    """``matplotlib.figure.Figure``; ImportError naming the ``plot`` extra when matplotlib is missing."""
    return require("matplotlib.figure", "plot", "Plotting a report").Figure


def ticker():
    """The ``matplotlib.ticker`` module (ImportError naming the ``plot`` extra when matplotlib is missing)."""
    return require("matplotlib.ticker", "plot", "Plotting a report")


def color(i: int) -> str:
    """The colour of the ``i``-th run (or arm), cycling through :data:`COLORS`.

    >>> color(0), color(len(COLORS))
    ('#1f77b4', '#1f77b4')
    """
    return COLORS[i % len(COLORS)]


# =========================================================================== panels


@dataclass(frozen=True)
class _Panel:
    """One axes: ``keys`` drawn with ``styles`` (one per key), a title and a y label."""

    title: str
    keys: tuple[str, ...]
    styles: tuple[str, ...] = ("-",)
    ylabel: str = ""
    levels: bool = False  # the collapse level: 0/1/2 ticks named, drawn as steps


def _all_keys(runs: Sequence[RunLog]) -> list[str]:
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.series))
    return list(keys)


def _ordered(found: Sequence[str], known: Sequence[str]) -> list[str]:
    """The ``found`` names in the ``known`` order, then the rest alphabetically."""
    return [k for k in known if k in found] + sorted(k for k in found if k not in known)


def _training_panels(keys: Sequence[str]) -> list[_Panel]:
    return [_Panel(TITLES[k], (k,), ylabel=k) for k in TRAINING_KEYS if k in keys]


def _diversity_panels(keys: Sequence[str]) -> tuple[list[_Panel], int]:
    views = [v for v in SCOPES if any(k.startswith(f"{GEN_PREFIX}{v}/") for k in keys)]
    metrics = _ordered(
        {k[len(GEN_PREFIX) :].split("/", 1)[1] for k in keys if key_group(k) == "diversity"}, DIVERSITY_METRICS
    )
    where = {"per_input": "within a prompt", "across_input": "across prompts"}
    panels = [
        _Panel(f"{TITLES.get(m, m)}\n{where[v]}", (f"{GEN_PREFIX}{v}/{m}",), ylabel=f"{GEN_PREFIX}{v}/{m}")
        for m in metrics
        for v in views
    ]
    return panels, len(views)


def _generation_panels(keys: Sequence[str]) -> list[_Panel]:
    return [_Panel(TITLES[k], (k,), ylabel=k) for k in GENERATION_KEYS if k in keys]


def _sampler_panels(keys: Sequence[str]) -> list[_Panel]:
    names = {k[len(SAMPLER_PREFIX) :] for k in keys if k.startswith(SAMPLER_PREFIX)}
    paired = {n.rsplit("_", 1)[0] for n in names if n.endswith(("_trained", "_dataset"))}
    singles = {n for n in names if n.rsplit("_", 1)[0] not in paired or not n.endswith(("_trained", "_dataset"))}
    panels = []
    for name in _ordered(paired | singles, SAMPLER_KEYS):
        key = SAMPLER_PREFIX + name
        if name in paired:
            title = TITLES.get(name, f"{name}: trained vs dataset")
            panels.append(_Panel(title, (f"{key}_trained", f"{key}_dataset"), ("-", ":"), ylabel=f"{key}_*"))
        else:
            panels.append(_Panel(TITLES.get(name, name), (key,), ylabel=key))
    return panels


def _collapse_panels(keys: Sequence[str]) -> list[_Panel]:
    panels = []
    if COLLAPSE_KEY in keys:
        panels.append(_Panel("collapse detector level", (COLLAPSE_KEY,), ylabel=COLLAPSE_KEY, levels=True))
    for key in sorted(k for k in keys if k.startswith(COLLAPSE_PREFIX) and k.endswith("/change")):
        watched = watched_key(key[len(COLLAPSE_PREFIX) : -len("/change")], keys)
        panels.append(_Panel(f"{watched}\nchange from its baseline (bad direction > 0)", (key,), ylabel="change"))
    return panels


def _other_panels(keys: Sequence[str]) -> list[_Panel]:
    return [_Panel(k, (k,), ylabel=k) for k in sorted(k for k in keys if key_group(k) == "other")]


def _legend_handles(runs: Sequence[RunLog], styles: Sequence[str] = ()) -> list[Any]:
    lines = require("matplotlib.lines", "plot", "Plotting a report")
    handles = [lines.Line2D([], [], color=color(i), linewidth=2, label=run.label) for i, run in enumerate(runs)]
    names = {"-": "trained", ":": "dataset"}
    if len(set(styles)) > 1:
        handles += [
            lines.Line2D([], [], color="0.3", linestyle=s, label=names.get(s, s)) for s in dict.fromkeys(styles)
        ]
    if any(run.warning_step is not None for run in runs):
        handles.append(lines.Line2D([], [], color="0.3", label="collapse warning", **WARNING_STYLE))
    if any(run.collapse_step is not None for run in runs):
        handles.append(lines.Line2D([], [], color="0.3", label="collapse", **COLLAPSE_STYLE))
    return handles


def _draw_panels(
    runs: Sequence[RunLog],
    panels: Sequence[_Panel],
    path: Path,
    title: str,
    *,
    ncols: int = 3,
    sharey_rows: bool = False,
) -> Path:
    """One figure: a grid of panels, every run in its colour, collapse marks on each run's curves."""
    Figure = figure_class()
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    width = max(6.4, 4.4 * ncols)
    fig = Figure(figsize=(width, 2.9 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey="row" if sharey_rows else False)
    styles: list[str] = []
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.set_visible(False)
            continue
        panel = panels[index]
        drawn, whole = False, True
        for i, run in enumerate(runs):
            run_color = color(i)
            run_drawn = False
            for key, style in zip(panel.keys, panel.styles * len(panel.keys)):
                if key not in run.series:
                    continue
                steps, values = run.series[key]
                ax.plot(
                    steps,
                    values,
                    color=run_color,
                    linestyle=style,
                    linewidth=1.6,
                    marker="o" if len(steps) <= 40 else None,
                    markersize=3,
                    drawstyle="steps-post" if panel.levels else "default",
                )
                styles.append(style)
                run_drawn = drawn = True
                whole = whole and bool(np.all(values == np.round(values)))
            if run_drawn:
                _mark_collapse(ax, run, run_color)
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", color="0.5", transform=ax.transAxes)
        if drawn and whole and not panel.levels:
            ax.yaxis.set_major_locator(ticker().MaxNLocator(integer=True))
        if panel.levels:
            ax.set_yticks([0, 1, 2], ["healthy", "warning", "collapse"])
            ax.set_ylim(-0.2, 2.2)
        ax.xaxis.set_major_locator(ticker().MaxNLocator(integer=True))  # steps are whole numbers: no 0.5 ticks
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel, fontsize=7, color="0.35")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if index + ncols >= len(panels):  # the lowest panel of its column
            ax.set_xlabel("step")
            ax.tick_params(labelbottom=True)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    handles = _legend_handles(runs, styles)
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), int(width / 1.6)),
        fontsize=9,
        frameon=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _mark_collapse(ax: Any, run: RunLog, line_color: str) -> None:
    if run.warning_step is not None:
        ax.axvline(run.warning_step, color=line_color, **WARNING_STYLE)
    if run.collapse_step is not None:
        ax.axvline(run.collapse_step, color=line_color, **COLLAPSE_STYLE)


def plot_run_group(runs: Sequence[RunLog], group: str, path: str | Path) -> Path | None:
    """Draw one figure of ``GROUPS`` for the runs; None (and no file) when none of its keys was logged."""
    keys = _all_keys(runs)
    ncols, sharey = 3, False
    if group == "training":
        panels = _training_panels(keys)
    elif group == "diversity":
        panels, ncols = _diversity_panels(keys)
        sharey = True
    elif group == "generation":
        panels = _generation_panels(keys)
    elif group == "sampler":
        panels = _sampler_panels(keys)
    elif group == "collapse":
        panels = _collapse_panels(keys)
    elif group == "other":
        panels = _other_panels(keys)
    else:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    if not panels:
        return None
    title = next(t for _, g, t, _ in FIGURES if g == group)
    return _draw_panels(runs, panels, Path(path), title, ncols=ncols, sharey_rows=sharey)
