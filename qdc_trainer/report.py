"""Reports with plots: training runs side by side, and the QDC profile of a scored dataset.

Two entry points, each writing PNG figures and one HTML page (plus the same page
in Markdown) into a folder:

- :func:`write_run_report` reads the logs of one or more training runs (the
  Trainer's ``trainer_state.json``, the generation monitor's samples) and plots the
  training loss, the diversity, complexity and quality of the generations, the
  sampler's telemetry and the collapse detector's verdict, one colour per run.
- :func:`write_profile_report` profiles a dataset scored by
  :func:`qdc_trainer.metrics.score_dataset`: quality and complexity histograms,
  cluster sizes, and quality against diversity with its Pareto frontier.

The figures need matplotlib (the ``plot`` extra). They are drawn with
``matplotlib.figure.Figure`` and saved with ``Figure.savefig``: no pyplot, no
backend switch, so a program that already uses pyplot is left alone.

The loading and computing functions are pure and work without matplotlib:

>>> series = log_series([{"loss": 2.0, "step": 1}, {"qdc/collapse/level": 1.0, "step": 4},
...                      {"qdc/collapse/level": 2.0, "step": 6}])
>>> collapse_steps(series)
(4, 6)
>>> pareto_frontier([1, 2, 3, 2.5], [3, 2, 1, 0.5]).tolist()
[0, 1, 2]
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import require
from .metrics.diversity import distinct_n, nearest_neighbor_distances  # the latter re-exported for the profile
from .monitor import SAMPLES_FILE

__all__ = [
    "RunLog",
    "cluster_quality_diversity",
    "collapse_culprits",
    "collapse_steps",
    "find_state_file",
    "key_group",
    "load_run",
    "log_series",
    "nearest_neighbor_distances",
    "pareto_frontier",
    "plot_run_group",
    "read_samples",
    "write_profile_report",
    "write_run_report",
]

STATE_FILE = "trainer_state.json"
RUN_CONFIG_FILE = "qdc_run.json"
COLLAPSE_KEY = "qdc/collapse/level"
RUN_PAGE = "report"
PROFILE_PAGE = "profile"

#: One colour per run, in order (matplotlib's tab10); more runs cycle through it.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WARNING_STYLE = dict(linestyle="--", linewidth=1.2, alpha=0.8)
COLLAPSE_STYLE = dict(linestyle="-.", linewidth=2.0, alpha=0.9)

TRAINING_KEYS = ("loss", "eval_loss", "qdc/train/entropy", "entropy")
DIVERSITY_METRICS = ("distinct_1", "distinct_2", "self_bleu", "compression_ratio", "vendi", "cosine_distance")
GENERATION_KEYS = (
    "qdc/gen/length", "qdc/gen/entropy", "qdc/gen/repetition", "qdc/gen/empty_rate", "qdc/gen/quality", "qdc/gen/seconds",
)
SAMPLER_KEYS = ("ess_ratio", "weight_entropy", "cluster_coverage", "quality", "complexity", "loss_ema", "updates")
GROUPS = ("training", "diversity", "generation", "sampler", "collapse", "other")

TITLES = {
    "loss": "training loss",
    "eval_loss": "evaluation loss",
    "qdc/train/entropy": "training entropy (nats)",
    "entropy": "training entropy (TRL, nats)",
    "qdc/gen/length": "tokens per generated sample",
    "qdc/gen/entropy": "generation entropy (nats)",
    "qdc/gen/repetition": "repeated word 3-grams within a sample",
    "qdc/gen/empty_rate": "share of empty samples",
    "qdc/gen/quality": "generation quality (scorer)",
    "qdc/gen/seconds": "seconds per monitor evaluation",
    "distinct_1": "distinct-1 (higher = more diverse)",
    "distinct_2": "distinct-2 (higher = more diverse)",
    "self_bleu": "self-BLEU (higher = more repetitive)",
    "compression_ratio": "gzip ratio (higher = more repetitive)",
    "vendi": "Vendi score (higher = more diverse)",
    "cosine_distance": "cosine distance (higher = more diverse)",
    "ess_ratio": "effective sample size / N",
    "weight_entropy": "weight entropy (normalised)",
    "cluster_coverage": "share of clusters trained on",
    "quality": "mean quality: trained vs dataset",
    "complexity": "mean complexity: trained vs dataset",
    "loss_ema": "loss EMA",
    "updates": "weight refreshes",
}

SAMPLE_PROMPTS = 4
"""Prompts shown per run in the samples table (the lowest prompt indices)."""
SAMPLES_PER_PROMPT = 2
"""Samples shown per prompt, at the first and at the last evaluation step."""
NOT_GENERATED = "\u2014"
"""Shown for a sample missing at a step (an empty completion shows as "(empty)")."""
CLUSTER_TEXTS = 64
"""Texts drawn per cluster (seeded) at most for its distinct-2 in the profile's quality-diversity plot."""
MAX_SCATTER_POINTS = 20_000
"""Examples in the per-example quality-diversity plot at most (a seeded random subset above)."""
FRONTIER_ROWS = 12
"""Frontier points listed on the profile page at most."""


# =========================================================================== loading runs


@dataclass
class RunLog:
    """The logs of one training run, in a tidy form.

    Attributes:
        label: the run's name in legends and tables.
        folder: the run folder as given.
        state_file: the ``trainer_state.json`` that was read.
        global_step: the state's ``global_step`` (the last logged step when it has none).
        series: logged key -> ``(steps, values)``, sorted by step; finite numbers only.
        samples: the generation monitor's samples (``qdc_generations.jsonl``), possibly empty.
        config: the run description from ``qdc_run.json``, when there is one.
        warning_step, collapse_step: where ``qdc/collapse/level`` first reached 1 and 2.
        notes: anything odd found while reading, for the page.
    """

    label: str
    folder: Path
    state_file: Path
    global_step: int
    series: dict[str, tuple[np.ndarray, np.ndarray]]
    samples: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None
    warning_step: int | None = None
    collapse_step: int | None = None
    notes: list[str] = field(default_factory=list)

    def last(self, key: str) -> float | None:
        """The last logged value of ``key``, or None."""
        pair = self.series.get(key)
        return None if pair is None or len(pair[1]) == 0 else float(pair[1][-1])


def find_state_file(run_dir: str | Path) -> Path:
    """The ``trainer_state.json`` of a run folder.

    The folder's own file when it has one, else the one in its latest
    ``checkpoint-<step>`` folder (its ``log_history`` holds everything up to that
    step); a path to a JSON file is taken as is. Raises ``FileNotFoundError``
    naming the folder when there is none.
    """
    path = Path(run_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {str(path)!r} does not exist")
    if (path / STATE_FILE).is_file():
        return path / STATE_FILE
    checkpoints = []
    for child in path.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and (child / STATE_FILE).is_file():
            checkpoints.append((int(match.group(1)), child / STATE_FILE))
    if not checkpoints:
        raise FileNotFoundError(
            f"run folder {str(path)!r} has no {STATE_FILE}, neither at its top nor in a checkpoint-* folder; "
            f"pass the Trainer's output_dir, or save the state with trainer.state.save_to_json('{STATE_FILE}')"
        )
    return max(checkpoints)[1]


def log_series(log_history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Turn a Trainer ``log_history`` into ``key -> (steps, values)``, each sorted by step.

    Only numbers are kept (not booleans, strings or NaN/inf, which mark an
    undefined value); entries without a numeric ``step`` are skipped.

    >>> s = log_series([{"loss": 2.5, "step": 10}, {"loss": float("nan"), "step": 20},
    ...                 {"loss": 2.0, "eval_loss": 2.2, "step": 30}, {"note": "x", "step": 40}])
    >>> {k: (v[0].tolist(), v[1].tolist()) for k, v in s.items()}
    {'loss': ([10, 30], [2.5, 2.0]), 'eval_loss': ([30], [2.2])}
    """
    points: dict[str, list[tuple[int, float]]] = {}
    for entry in log_history:
        if not isinstance(entry, Mapping):
            continue
        step = entry.get("step")
        if not _is_number(step):
            continue
        for key, value in entry.items():
            if key == "step" or not _is_number(value) or not math.isfinite(value):
                continue
            points.setdefault(key, []).append((int(step), float(value)))
    out = {}
    for key, pairs in points.items():
        pairs.sort(key=lambda p: p[0])  # stable: values logged at one step keep their order
        out[key] = (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs]))
    return out


def collapse_steps(series: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[int | None, int | None]:
    """Steps where ``qdc/collapse/level`` first reaches 1 (warning) and 2 (collapse), None when never.

    A run that jumps straight to collapse has its warning at the same step.

    >>> collapse_steps({"qdc/collapse/level": (np.array([0, 5, 10, 15]), np.array([0.0, 2.0, 1.0, 2.0]))})
    (5, 5)
    >>> collapse_steps({})
    (None, None)
    """
    pair = series.get(COLLAPSE_KEY)
    if pair is None:
        return None, None
    steps, levels = pair
    found = []
    for threshold in (1.0, 2.0):
        hit = np.flatnonzero(levels >= threshold)
        found.append(int(steps[hit[0]]) if len(hit) else None)
    return found[0], found[1]


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``qdc_generations.jsonl`` file (blank and unreadable lines are skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # e.g. a line cut short when training was killed
                continue
            if isinstance(row, dict) and _is_number(row.get("step")):
                rows.append(row)
    return rows


def load_run(run_dir: str | Path, label: str | None = None) -> RunLog:
    """Read one run folder: its trainer state, and when present its samples and ``qdc_run.json``.

    The samples and the run description are looked up in the folder, and for a
    ``checkpoint-<step>`` folder also in its parent (where the Trainer's
    ``output_dir`` keeps them).
    """
    folder = Path(run_dir)
    state_file = find_state_file(folder)
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the trainer state {str(state_file)!r} of run {str(folder)!r}: {err}") from err
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise ValueError(f"{str(state_file)!r} (run {str(folder)!r}) has no log_history list: is it a trainer_state.json?")
    series = log_series(history)
    base = folder if folder.is_dir() else state_file.parent
    notes = []
    if not series:
        notes.append("nothing numeric was logged")
    samples: list[dict[str, Any]] = []
    samples_file = _look_up(base, SAMPLES_FILE)
    if samples_file is not None:
        samples = read_samples(samples_file)
    config = None
    config_file = _look_up(base, RUN_CONFIG_FILE)
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            notes.append(f"{RUN_CONFIG_FILE} could not be read: {err}")
        if config is not None and not isinstance(config, dict):
            notes.append(f"{RUN_CONFIG_FILE} does not hold a JSON object")
            config = None
    logged_steps = [int(s[-1]) for s, _ in series.values() if len(s)]
    global_step = state.get("global_step")
    if not _is_number(global_step):
        global_step = max(logged_steps, default=0)
    warning, collapse = collapse_steps(series)
    return RunLog(
        label=label if label is not None else _default_label(folder, state_file),
        folder=folder, state_file=state_file, global_step=int(global_step), series=series, samples=samples,
        config=config, warning_step=warning, collapse_step=collapse, notes=notes,
    )


def key_group(key: str) -> str | None:
    """The figure a logged key belongs to: one of ``GROUPS``, or None (not plotted, e.g. ``grad_norm``).

    >>> [key_group(k) for k in ("loss", "qdc/gen/per_input/vendi", "qdc/gen/length", "qdc/sampler/ess_ratio",
    ...                         "qdc/collapse/level", "qdc/probe/score", "grad_norm")]
    ['training', 'diversity', 'generation', 'sampler', 'collapse', 'other', None]
    """
    if key in TRAINING_KEYS:
        return "training"
    if key.startswith(("qdc/gen/per_input/", "qdc/gen/across_input/")):
        return "diversity"
    if key in GENERATION_KEYS:
        return "generation"
    if key.startswith("qdc/sampler/"):
        return "sampler"
    if key.startswith("qdc/collapse/"):
        return "collapse"
    if key.startswith("qdc/"):
        return "other"
    return None


# =========================================================================== run figures


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
    views = [v for v in ("per_input", "across_input") if any(k.startswith(f"qdc/gen/{v}/") for k in keys)]
    metrics = _ordered({k.split("/", 3)[3] for k in keys if key_group(k) == "diversity"}, DIVERSITY_METRICS)
    where = {"per_input": "within a prompt", "across_input": "across prompts"}
    panels = [
        _Panel(f"{TITLES.get(m, m)}\n{where[v]}", (f"qdc/gen/{v}/{m}",), ylabel=f"qdc/gen/{v}/{m}")
        for m in metrics for v in views
    ]
    return panels, len(views)


def _generation_panels(keys: Sequence[str]) -> list[_Panel]:
    return [_Panel(TITLES[k], (k,), ylabel=k) for k in GENERATION_KEYS if k in keys]


def _sampler_panels(keys: Sequence[str]) -> list[_Panel]:
    names = {k[len("qdc/sampler/"):] for k in keys if k.startswith("qdc/sampler/")}
    paired = {n.rsplit("_", 1)[0] for n in names if n.endswith(("_trained", "_dataset"))}
    singles = {n for n in names if n.rsplit("_", 1)[0] not in paired or not n.endswith(("_trained", "_dataset"))}
    panels = []
    for name in _ordered(paired | singles, SAMPLER_KEYS):
        if name in paired:
            title = TITLES.get(name, f"{name}: trained vs dataset")
            panels.append(_Panel(title, (f"qdc/sampler/{name}_trained", f"qdc/sampler/{name}_dataset"), ("-", ":"),
                                 ylabel=f"qdc/sampler/{name}_*"))
        else:
            panels.append(_Panel(TITLES.get(name, name), (f"qdc/sampler/{name}",), ylabel=f"qdc/sampler/{name}"))
    return panels


def _collapse_panels(keys: Sequence[str]) -> list[_Panel]:
    panels = []
    if COLLAPSE_KEY in keys:
        panels.append(_Panel("collapse detector level", (COLLAPSE_KEY,), ylabel=COLLAPSE_KEY, levels=True))
    for key in sorted(k for k in keys if k.startswith("qdc/collapse/") and k.endswith("/change")):
        watched = _watched_key(key[len("qdc/collapse/"):-len("/change")], keys)
        panels.append(_Panel(f"{watched}\nchange from its baseline (bad direction > 0)", (key,), ylabel="change"))
    return panels


def _other_panels(keys: Sequence[str]) -> list[_Panel]:
    return [_Panel(k, (k,), ylabel=k) for k in sorted(k for k in keys if key_group(k) == "other")]


def _figure_class():
    return require("matplotlib.figure", "plot", "Plotting a report").Figure


def _ticker():
    return require("matplotlib.ticker", "plot", "Plotting a report")


def _legend_handles(runs: Sequence[RunLog], styles: Sequence[str] = ()) -> list[Any]:
    lines = require("matplotlib.lines", "plot", "Plotting a report")
    handles = [lines.Line2D([], [], color=_color(i), linewidth=2, label=run.label) for i, run in enumerate(runs)]
    names = {"-": "trained", ":": "dataset"}
    if len(set(styles)) > 1:
        handles += [lines.Line2D([], [], color="0.3", linestyle=s, label=names.get(s, s)) for s in dict.fromkeys(styles)]
    if any(run.warning_step is not None for run in runs):
        handles.append(lines.Line2D([], [], color="0.3", label="collapse warning", **WARNING_STYLE))
    if any(run.collapse_step is not None for run in runs):
        handles.append(lines.Line2D([], [], color="0.3", label="collapse", **COLLAPSE_STYLE))
    return handles


def _draw_panels(runs: Sequence[RunLog], panels: Sequence[_Panel], path: Path, title: str, *,
                 ncols: int = 3, sharey_rows: bool = False) -> Path:
    """One figure: a grid of panels, every run in its colour, collapse marks on each run's curves."""
    Figure = _figure_class()
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
            color = _color(i)
            run_drawn = False
            for key, style in zip(panel.keys, panel.styles * len(panel.keys)):
                if key not in run.series:
                    continue
                steps, values = run.series[key]
                ax.plot(steps, values, color=color, linestyle=style, linewidth=1.6,
                        marker="o" if len(steps) <= 40 else None, markersize=3,
                        drawstyle="steps-post" if panel.levels else "default")
                styles.append(style)
                run_drawn = drawn = True
                whole = whole and bool(np.all(values == np.round(values)))
            if run_drawn:
                _mark_collapse(ax, run, color)
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", color="0.5", transform=ax.transAxes)
        if drawn and whole and not panel.levels:
            ax.yaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
        if panel.levels:
            ax.set_yticks([0, 1, 2], ["healthy", "warning", "collapse"])
            ax.set_ylim(-0.2, 2.2)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel, fontsize=7, color="0.35")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if index + ncols >= len(panels):  # the lowest panel of its column
            ax.set_xlabel("step")
            ax.tick_params(labelbottom=True)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    handles = _legend_handles(runs, styles)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), int(width / 1.6)), fontsize=9,
               frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _mark_collapse(ax: Any, run: RunLog, color: str) -> None:
    if run.warning_step is not None:
        ax.axvline(run.warning_step, color=color, **WARNING_STYLE)
    if run.collapse_step is not None:
        ax.axvline(run.collapse_step, color=color, **COLLAPSE_STYLE)


FIGURES = (
    # file name, group, title, caption
    ("training.png", "training", "Training",
     "Training and evaluation loss, and the entropy of the model's predictive distribution on the training batches."),
    ("diversity.png", "diversity", "Diversity of the generations",
     "The generation monitor's diversity on its probe prompts: within a prompt (the k samples of one prompt, "
     "averaged over prompts) and across prompts (one sample per prompt). Distinct-n, Vendi and cosine distance fall, "
     "self-BLEU and the gzip ratio rise when the outputs narrow."),
    ("generation.png", "generation", "Complexity and quality of the generations",
     "Length, entropy, repetition within a sample, share of empty samples, and the scorer's quality when one is set."),
    ("sampler.png", "sampler", "QDC sampler telemetry",
     "Effective sample size and weight entropy of the sampling weights, share of clusters trained on since the "
     "previous log, and the mean quality and complexity of the examples trained on (solid) against the dataset's "
     "(dotted)."),
    ("collapse.png", "collapse", "Collapse detector",
     "The detector's level (0 healthy, 1 warning, 2 collapse) and, per watched series, how far its average has "
     "moved from the baseline in the bad direction. Vertical lines on every figure: first warning (dashed) and "
     "collapse (dash-dot), in the run's colour."),
    ("other.png", "other", "Other qdc/ keys", "Numeric keys under qdc/ that belong to none of the figures above."),
)


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


# =========================================================================== the run page


def write_run_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
                     labels: Sequence[str] | None = None) -> Path:
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
    _figure_class()  # fail early, before reading anything, when matplotlib is missing
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
    header = ["run", "folder", "trainer state", "steps", "final loss", "final eval loss", "collapse warning", "collapse"]
    rows = []
    for run in runs:
        final_loss = run.last("loss") if "loss" in run.series else run.last("train_loss")
        inside = run.folder.is_dir() and run.state_file.is_relative_to(run.folder)
        state = run.state_file.relative_to(run.folder) if inside else run.state_file.name
        rows.append([run.label, str(run.folder), str(state), str(run.global_step), _fmt(final_loss),
                     _fmt(run.last("eval_loss")), _collapse_text(run, run.warning_step),
                     _collapse_text(run, run.collapse_step)])
    return header, rows


def _collapse_text(run: RunLog, step: int | None) -> str:
    if step is not None:
        return f"step {step}"
    return "none" if COLLAPSE_KEY in run.series else "not logged"


def _watched_key(name: str, keys: Any) -> str:
    """The watched series behind ``qdc/collapse/<name>/...``: the detector drops a leading ``qdc/`` of the key
    (``qdc/collapse/gen/entropy/level`` watches ``qdc/gen/entropy``); runs logged before that kept it.

    >>> _watched_key("gen/entropy", {"qdc/gen/entropy"}), _watched_key("entropy", {"entropy"})
    ('qdc/gen/entropy', 'entropy')
    """
    return f"qdc/{name}" if name not in keys and f"qdc/{name}" in keys else name


def collapse_culprits(run: RunLog, step: int | None, level: int) -> list[str]:
    """The watched series whose own level (``qdc/collapse/<name>/level``) was at least ``level`` at ``step``."""
    if step is None:
        return []
    found = []
    for key, (steps, values) in run.series.items():
        match = re.fullmatch(r"qdc/collapse/(.+)/level", key)
        if match and np.any((steps == step) & (values >= level)):
            found.append(_watched_key(match.group(1), run.series))
    return sorted(found)


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
        rows.append([key, str(len(values)), f"{_fmt(values[0])} (step {steps[0]})",
                     f"{_fmt(values[-1])} (step {steps[-1]})", _fmt(values.min()), _fmt(values.max())])
    return rows


SUMMARY_HEADER = ["key", "points", "first", "last", "min", "max"]


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
    parts = [_html_head("QDC training report"), "<h1>QDC training report</h1>",
             f"<p class='muted'>{len(runs)} run(s), generated {_now()}.</p>", "<h2>Runs</h2>"]
    header, rows = _run_overview(runs)
    swatches = [f"<span class='swatch' style='background:{_color(i)}'></span>" for i in range(len(runs))]
    parts.append(_html_table(header, rows, first_cells=swatches))
    if not figures:
        parts.append("<p>None of the runs logged a key that a figure shows.</p>")
    for name, title, caption in figures:
        parts += [f"<h2>{_h(title)}</h2>", f"<p class='caption'>{_h(caption)}</p>",
                  f"<a href='{_h(name)}'><img src='{_h(name)}' alt='{_h(title)}'></a>"]
    for i, run in enumerate(runs):
        parts.append(f"<h2><span class='swatch' style='background:{_color(i)}'></span>Run {_h(run.label)}</h2>")
        parts.append(f"<p class='muted'>{_h(str(run.folder))}</p>")
        for note in run.notes:
            parts.append(f"<p class='note'>{_h(note)}</p>")
        parts.append(f"<p><b>{_h(_collapse_sentence(run))}</b></p>")
        if run.config is not None:
            parts += [f"<h3>Run description ({RUN_CONFIG_FILE})</h3>",
                      f"<pre>{_h(json.dumps(run.config, indent=2, sort_keys=True, default=str))}</pre>"]
        parts.append("<h3>Logged values</h3>")
        summary = _summary_rows(run)
        parts.append(_html_table(SUMMARY_HEADER, summary) if summary else "<p>Nothing was logged.</p>")
        shown, sample_rows = _sample_comparison(run.samples)
        if sample_rows:
            parts.append("<h3>Generation samples</h3>")
            parts.append(_html_table(["prompt", "sample"] + [f"completion at step {s}" for s in shown], sample_rows,
                                     wide_last=len(shown)))
        else:
            parts.append(f"<p class='muted'>No generation samples ({SAMPLES_FILE} not found or empty).</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _run_markdown(runs: Sequence[RunLog], figures: Sequence[tuple[str, str, str]]) -> str:
    parts = ["# QDC training report", "", f"{len(runs)} run(s), generated {_now()}.", "", "## Runs", ""]
    header, rows = _run_overview(runs)
    parts += _md_table(header, rows)
    for name, title, caption in figures:
        parts += ["", f"## {title}", "", _md(caption), "", f"![{title}]({name})"]
    for run in runs:
        parts += ["", f"## Run {_md(run.label)}", "", f"`{run.folder}`", ""]
        parts += [f"- {_md(note)}" for note in run.notes]
        parts += [f"**{_md(_collapse_sentence(run))}**", ""]
        if run.config is not None:
            parts += [f"### Run description ({RUN_CONFIG_FILE})", "", "```json",
                      json.dumps(run.config, indent=2, sort_keys=True, default=str).replace("```", "'''"), "```", ""]
        summary = _summary_rows(run)
        parts += ["### Logged values", ""] + (_md_table(SUMMARY_HEADER, summary) if summary else ["Nothing was logged."])
        shown, sample_rows = _sample_comparison(run.samples)
        if sample_rows:
            parts += ["", "### Generation samples", ""]
            parts += _md_table(["prompt", "sample"] + [f"completion at step {s}" for s in shown], sample_rows)
    return "\n".join(parts) + "\n"


# =========================================================================== dataset profile


def pareto_frontier(x: Any, y: Any) -> np.ndarray:
    """Indices of the Pareto-optimal points when both ``x`` and ``y`` are to be maximised, by increasing x.

    A point is on the frontier when no other point is at least as good on both
    coordinates and better on one. Of several identical points one is kept.
    Points with a NaN or infinite coordinate are never on it.

    >>> pareto_frontier([0, 1, 1, 2], [2, 1, 2, 0]).tolist()  # (1, 1) is dominated by (1, 2); (0, 2) too
    [2, 3]
    >>> pareto_frontier([], []).tolist()
    []
    """
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {len(xs)} and {len(ys)}")
    valid = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    order = valid[np.lexsort((-ys[valid], -xs[valid]))]  # x descending, then y descending
    frontier = []
    best_y = -np.inf
    for i in order:
        if ys[i] > best_y:  # nothing to its right (or at its x) reaches its y
            frontier.append(i)
            best_y = ys[i]
    return np.array(frontier[::-1], dtype=np.int64)


def cluster_quality_diversity(quality: Any, clusters: Sequence[Any], texts: Sequence[str], *,
                              max_texts: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Per cluster: size, mean quality and the distinct-2 of its texts (the profile's cluster scatter).

    Distinct-n falls as a collection grows, so every cluster's distinct-2 is taken
    on the same number of texts, drawn at random (seeded): ``max_texts``, by default
    the median cluster size capped at ``CLUSTER_TEXTS`` (at least 2). Clusters
    smaller than that use all their texts, which favours them slightly. Examples
    with a non-finite quality are left out. Returns the arrays ``cluster`` (ids as
    text, in natural order), ``size``, ``quality`` (mean), ``distinct_2``, and
    ``max_texts``.

    >>> r = cluster_quality_diversity([1.0, 0.0, 0.5, 0.5], [0, 0, 1, 1], ["a b c", "a b d", "x y", "x y"])
    >>> r["cluster"].tolist(), r["quality"].tolist(), r["distinct_2"].tolist(), r["max_texts"]
    (['0', '1'], [0.5, 0.5], [0.75, 0.5], 2)
    """
    q = np.asarray(quality, dtype=np.float64)
    if not (len(q) == len(clusters) == len(texts)):
        raise ValueError(f"quality, clusters and texts differ in length ({len(q)}, {len(clusters)}, {len(texts)})")
    members: dict[str, list[int]] = {}
    for i, c in enumerate(clusters):
        if math.isfinite(q[i]):
            members.setdefault(str(c), []).append(i)
    rng = np.random.default_rng(seed)
    ids = sorted(members, key=_natural_key)
    if max_texts is None:
        median = np.median([len(m) for m in members.values()]) if members else CLUSTER_TEXTS
        max_texts = int(min(CLUSTER_TEXTS, max(2, median)))
    sizes, means, distinct = [], [], []
    for c in ids:
        index = np.asarray(members[c])
        sizes.append(len(index))
        means.append(float(q[index].mean()))
        pick = index if len(index) <= max_texts else rng.choice(index, size=max_texts, replace=False)
        distinct.append(distinct_n([texts[i] for i in sorted(pick)], 2))
    return {"cluster": np.array(ids, dtype=object), "size": np.array(sizes, dtype=np.int64),
            "quality": np.array(means), "distinct_2": np.array(distinct), "max_texts": max_texts}


def write_profile_report(dataset: Any, out_dir: str | Path, *, quality_column: str = "quality",
                         complexity_column: str = "complexity", cluster_column: str = "cluster",
                         text_column: str = "text", embeddings: Any = None) -> Path:
    """Profile a scored dataset's quality, diversity and complexity on one page; returns ``profile.html``.

    The dataset is a ``datasets.Dataset``, a pandas ``DataFrame`` or a dict of
    lists holding some of the columns that
    :func:`qdc_trainer.metrics.score_dataset` adds (``quality``, ``complexity``,
    ``cluster``) and the text. Written into ``out_dir``: ``profile.html``,
    ``profile.md`` and the figures

    - ``quality_hist.png``, ``complexity_hist.png``: histograms, with the mean and median;
    - ``cluster_sizes.png``: examples per cluster, largest first;
    - ``quality_diversity.png``: quality against diversity with the Pareto frontier
      (the points no other point beats on both) drawn as a line. With
      ``embeddings`` (one row per example) each point is an example and its
      diversity is the cosine distance to its nearest neighbour in the dataset
      (how unlike everything else it is; a random 20,000 examples above that
      size). Otherwise each point is a cluster: its mean quality against the
      distinct-2 of the same number of its texts drawn at random (see
      :func:`cluster_quality_diversity`), sized by the cluster's share of the data.

    The page gives the dataset size, the clusters (number, effective number =
    exp of the entropy of their shares, largest share), summary statistics of
    quality and complexity (mean, standard deviation, 5/25/50/75/95% quantiles,
    extremes), the dataset's distinct-1 and distinct-2, the figures and the
    frontier's points. A missing column skips its figures, and the page says so.

    Args:
        embeddings: optional ``(n, d)`` array, or the name of a column of vectors
            (``score_dataset(..., keep_embeddings=True)`` adds ``embedding``).

    Raises:
        ValueError: none of the four columns is present (the message names them), columns of
            different lengths, or embeddings with the wrong number of rows.
        TypeError: not a table, or a non-numeric quality or complexity column.
        ImportError: matplotlib is missing (``pip install 'qdc-trainer[plot]'``).
    """
    names = _column_names(dataset)
    wanted = {"quality": quality_column, "complexity": complexity_column, "cluster": cluster_column,
              "text": text_column}
    present = {role: col for role, col in wanted.items() if col in names}
    if not present:
        expected = ", ".join(f"{role}_column={col!r}" for role, col in wanted.items())
        raise ValueError(f"the dataset has none of the expected columns ({expected}); its columns are {names}. "
                         "Score it with qdc_trainer.metrics.score_dataset, or pass the right column names.")
    _figure_class()
    columns = {role: _column(dataset, col) for role, col in present.items()}
    lengths = {present[role]: len(values) for role, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the columns differ in length: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("the dataset is empty")
    notes = [f"column {col!r} not found: {what} skipped" for role, col, what in (
        ("quality", quality_column, "quality histogram, statistics and quality-versus-diversity plot"),
        ("complexity", complexity_column, "complexity histogram and statistics"),
        ("cluster", cluster_column, "cluster sizes"),
        ("text", text_column, "distinct-n of the texts"),
    ) if role not in present]
    quality = _numeric(columns.get("quality"), quality_column, notes)
    complexity = _numeric(columns.get("complexity"), complexity_column, notes)
    clusters = columns.get("cluster")
    texts = None if "text" not in columns else ["" if t is None else str(t) for t in columns["text"]]
    matrix = None
    if embeddings is not None:
        if isinstance(embeddings, str):
            if embeddings not in names:
                raise ValueError(f"embeddings={embeddings!r} is not a column of the dataset (columns: {names})")
            embeddings = _column(dataset, embeddings)
        matrix = np.asarray(embeddings, dtype=np.float64)
        if matrix.ndim != 2 or len(matrix) != n:
            raise ValueError(f"embeddings must have one row per example ({n}), got shape {matrix.shape}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str, str]] = []
    stats: list[list[str]] = [["examples", f"{n:,}"]]
    if quality is not None and np.isfinite(quality).any():
        _plot_histogram(quality, out / "quality_hist.png", "Quality", quality_column)
        figures.append(("quality_hist.png", "Quality", "Distribution of quality, with its mean and median."))
        stats += _describe("quality", quality)
    if complexity is not None and np.isfinite(complexity).any():
        _plot_histogram(complexity, out / "complexity_hist.png", "Complexity", complexity_column)
        figures.append(("complexity_hist.png", "Complexity", "Distribution of complexity, with its mean and median."))
        stats += _describe("complexity", complexity)
    if clusters is not None:
        sizes = Counter(str(c) for c in clusters).most_common()
        shares = np.array([s for _, s in sizes], dtype=np.float64) / n
        stats += [["clusters", str(len(sizes))],
                  ["effective number of clusters", _fmt(float(np.exp(-(shares * np.log(shares)).sum())))],
                  ["largest cluster share", f"{shares[0]:.1%}"], ["smallest cluster share", f"{shares[-1]:.1%}"]]
        _plot_cluster_sizes(sizes, out / "cluster_sizes.png", cluster_column)
        figures.append(("cluster_sizes.png", "Cluster sizes",
                        "Examples per cluster, largest first; the dashed line is the size of a perfectly balanced "
                        "clustering. The QDC sampler gives small clusters more mass as its trade-off moves to 0."))
    if texts is not None:
        stats += [["distinct-1 of the texts", _fmt(distinct_n(texts, 1))],
                  ["distinct-2 of the texts", _fmt(distinct_n(texts, 2))],
                  ["mean words per text", _fmt(float(np.mean([len(t.split()) for t in texts])))]]
    frontier_header: list[str] = []
    frontier_rows: list[list[str]] = []
    scatter = _quality_diversity(quality, clusters, texts, matrix, quality_column, notes)
    if scatter is not None:
        _plot_quality_diversity(scatter, out / "quality_diversity.png")
        figures.append(("quality_diversity.png", "Quality versus diversity", scatter["caption"]))
        frontier_header, frontier_rows = scatter["table"]
    page = out / f"{PROFILE_PAGE}.html"
    page.write_text(_profile_html(stats, figures, notes, frontier_header, frontier_rows), encoding="utf-8")
    (out / f"{PROFILE_PAGE}.md").write_text(_profile_markdown(stats, figures, notes, frontier_header, frontier_rows),
                                            encoding="utf-8")
    return page


def _quality_diversity(quality: np.ndarray | None, clusters: Sequence[Any] | None, texts: list[str] | None,
                       matrix: np.ndarray | None, quality_column: str, notes: list[str]) -> dict[str, Any] | None:
    """The points of the quality-diversity scatter, its frontier, labels and the frontier table; None to skip."""
    if quality is None:  # the page already says the column is missing
        return None
    if not np.isfinite(quality).any():
        notes.append("no finite quality value: the quality histogram and quality-versus-diversity plot are skipped")
        return None
    if matrix is not None:
        keep = np.flatnonzero(np.isfinite(quality))
        if len(keep) > MAX_SCATTER_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(keep, size=MAX_SCATTER_POINTS, replace=False))
            notes.append(f"the quality-versus-diversity plot uses a random {MAX_SCATTER_POINTS:,} examples, "
                         "with nearest neighbours among them")
        if len(keep) < 2:
            notes.append("fewer than 2 examples with a quality: the quality-versus-diversity plot is skipped")
            return None
        x = nearest_neighbor_distances(matrix[keep])
        y = quality[keep]
        front = pareto_frontier(x, y)
        rows = [[str(keep[i]), _fmt(y[i]), _fmt(x[i]), _snippet(texts[keep[i]]) if texts else ""]
                for i in front[:FRONTIER_ROWS]]
        return {"x": x, "y": y, "sizes": None, "labels": None, "front": front,
                "xlabel": "cosine distance to the nearest neighbour (higher = more unlike the rest)",
                "ylabel": quality_column, "title": "Quality versus diversity, per example",
                "caption": "Each point is an example: its quality against the cosine distance of its embedding to the "
                           "nearest other example. The line joins the Pareto frontier: the examples that no other "
                           "example beats on both (the high-quality, non-redundant ones).",
                "table": (["example", "quality", "distance to nearest", "text"], rows)}
    if clusters is None or texts is None:
        missing = "cluster" if clusters is None else "text"
        notes.append(f"the quality-versus-diversity plot needs embeddings, or the cluster and text columns "
                     f"(the {missing} column is missing): skipped")
        return None
    per = cluster_quality_diversity(quality, clusters, texts)
    if len(per["cluster"]) == 0:
        return None
    front = pareto_frontier(per["distinct_2"], per["quality"])
    total = per["size"].sum()
    rows = [[str(per["cluster"][i]), str(per["size"][i]), _fmt(per["quality"][i]), _fmt(per["distinct_2"][i])]
            for i in front[:FRONTIER_ROWS]]
    m = per["max_texts"]
    return {"x": per["distinct_2"], "y": per["quality"], "sizes": per["size"] / total, "labels": per["cluster"],
            "front": front, "xlabel": f"distinct-2 of {m} texts drawn from the cluster",
            "ylabel": f"mean {quality_column}", "title": "Quality versus diversity, per cluster",
            "caption": "Each point is a cluster, its area proportional to the cluster's share of the data: its mean "
                       f"quality against the distinct-2 of {m} of its texts drawn at random (the same number for every "
                       "cluster, since distinct-n falls as a collection grows; smaller clusters use all theirs). The "
                       "line joins the Pareto frontier: the clusters that no other cluster beats on both.",
            "table": (["cluster", "size", "mean quality", "distinct-2"], rows)}


def _plot_histogram(values: np.ndarray, path: Path, title: str, column: str) -> Path:
    Figure = _figure_class()
    finite = values[np.isfinite(values)]
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    low, high = finite.min(), finite.max()
    if np.all(finite == np.round(finite)) and high - low <= 60:  # whole numbers (steps, words): one bar each
        bins: Any = np.arange(low - 0.5, high + 1.5)
    else:
        bins = min(40, max(len(np.unique(finite)), 1))
    ax.hist(finite, bins=bins, color=COLORS[0], alpha=0.85, edgecolor="white")
    ax.yaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    ax.axvline(finite.mean(), color="black", linestyle="--", linewidth=1.2, label=f"mean {_fmt(finite.mean())}")
    ax.axvline(np.median(finite), color=COLORS[3], linestyle=":", linewidth=1.6,
               label=f"median {_fmt(np.median(finite))}")
    ax.set_title(f"{title} ({len(finite):,} examples)", fontweight="bold")
    ax.set_xlabel(column)
    ax.set_ylabel("examples")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False)
    fig.savefig(path, dpi=100)
    return path


def _plot_cluster_sizes(sizes: Sequence[tuple[str, int]], path: Path, column: str) -> Path:
    Figure = _figure_class()
    k = len(sizes)
    fig = Figure(figsize=(min(14.0, max(6.4, 0.25 * k + 2)), 3.8), layout="constrained")
    ax = fig.subplots()
    counts = [s for _, s in sizes]
    ax.bar(range(k), counts, color=COLORS[0], width=0.8)
    ax.axhline(sum(counts) / k, color="black", linestyle="--", linewidth=1.2, label="balanced size")
    if k <= 40:
        ax.set_xticks(range(k), [c for c, _ in sizes], rotation=90 if k > 12 else 0, fontsize=8)
        ax.set_xlabel(f"{column} (largest first)")
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{k} clusters, largest first")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
    ax.set_title(f"Cluster sizes ({k} clusters)", fontweight="bold")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False)
    fig.savefig(path, dpi=100)
    return path


def _plot_quality_diversity(scatter: Mapping[str, Any], path: Path) -> Path:
    Figure = _figure_class()
    x, y, front = scatter["x"], scatter["y"], scatter["front"]
    fig = Figure(figsize=(6.8, 4.8), layout="constrained")
    ax = fig.subplots()
    if scatter["sizes"] is None:
        ax.scatter(x, y, s=8, color=COLORS[0], alpha=0.35, linewidths=0, rasterized=len(x) > 2000, label="examples")
    else:
        ax.scatter(x, y, s=30 + 1500 * scatter["sizes"], color=COLORS[0], alpha=0.45, edgecolors="white",
                   label="clusters (area = share)")
    ax.plot(x[front], y[front], color=COLORS[3], linewidth=2, marker="o", markersize=5, label="Pareto frontier")
    if scatter["labels"] is not None and len(x) <= 60:
        for i in front:
            ax.annotate(str(scatter["labels"][i]), (x[i], y[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(scatter["xlabel"])
    ax.set_ylabel(scatter["ylabel"])
    ax.set_title(scatter["title"], fontweight="bold")
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, loc="lower left")
    fig.savefig(path, dpi=100)
    return path


def _describe(name: str, values: np.ndarray) -> list[list[str]]:
    finite = values[np.isfinite(values)]
    q = np.quantile(finite, [0.05, 0.25, 0.5, 0.75, 0.95])
    return [[f"{name}: mean ± std", f"{_fmt(finite.mean())} ± {_fmt(finite.std())}"],
            [f"{name}: min / max", f"{_fmt(finite.min())} / {_fmt(finite.max())}"],
            [f"{name}: 5% / 25% / 50% / 75% / 95%", " / ".join(_fmt(v) for v in q)]]


def _profile_html(stats, figures, notes, frontier_header, frontier_rows) -> str:
    parts = [_html_head("QDC dataset profile"), "<h1>QDC dataset profile</h1>",
             f"<p class='muted'>Generated {_now()}.</p>"]
    parts += [f"<p class='note'>{_h(note)}</p>" for note in notes]
    parts += ["<h2>Summary</h2>", _html_table(["statistic", "value"], stats)]
    for name, title, caption in figures:
        parts += [f"<h2>{_h(title)}</h2>", f"<p class='caption'>{_h(caption)}</p>",
                  f"<a href='{_h(name)}'><img src='{_h(name)}' alt='{_h(title)}'></a>"]
    if frontier_rows:
        parts += ["<h3>On the Pareto frontier (highest quality first)</h3>",
                  _html_table(frontier_header, frontier_rows)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _profile_markdown(stats, figures, notes, frontier_header, frontier_rows) -> str:
    parts = ["# QDC dataset profile", "", f"Generated {_now()}.", ""]
    parts += [f"- {_md(note)}" for note in notes]
    parts += ["", "## Summary", ""] + _md_table(["statistic", "value"], stats)
    for name, title, caption in figures:
        parts += ["", f"## {title}", "", _md(caption), "", f"![{title}]({name})"]
    if frontier_rows:
        parts += ["", "### On the Pareto frontier (highest quality first)", ""] + _md_table(frontier_header, frontier_rows)
    return "\n".join(parts) + "\n"


# =========================================================================== small utilities


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _int(value: Any) -> int:
    return int(value) if _is_number(value) else -1


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _fmt(value: Any) -> str:
    """A number for a table: integers as such, else 4 significant digits; ``n/a`` for None."""
    if value is None:
        return "n/a"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def _now() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def _natural_key(text: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t)


def _default_label(folder: Path, state_file: Path) -> str:
    name = folder.name if folder.is_dir() else state_file.parent.name
    return name or str(folder)


def _unique(labels: Sequence[str]) -> list[str]:
    """Labels made unique with a ``#2``, ``#3``... suffix on repeats."""
    seen: Counter[str] = Counter()
    out = []
    for label in labels:
        seen[label] += 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def _look_up(folder: Path, name: str) -> Path | None:
    for place in (folder, folder.parent) if re.fullmatch(r"checkpoint-\d+", folder.name) else (folder,):
        if (place / name).is_file():
            return place / name
    return None


def _column_names(data: Any) -> list[str]:
    if hasattr(data, "column_names"):  # datasets.Dataset
        return list(data.column_names)
    if isinstance(data, Mapping):
        return [str(k) for k in data]
    if hasattr(data, "columns"):  # pandas.DataFrame
        return [str(c) for c in data.columns]
    raise TypeError(f"dataset must be a datasets.Dataset, a pandas DataFrame or a dict of lists, "
                    f"got {type(data).__name__}")


def _column(data: Any, name: str) -> list:
    values = data[name]
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _numeric(values: list | None, column: str, notes: list[str]) -> np.ndarray | None:
    if values is None:
        return None
    try:
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"column {column!r} must hold numbers") from None
    if arr.ndim != 1:
        raise TypeError(f"column {column!r} must hold one number per example, got shape {arr.shape}")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        notes.append(f"{bad:,} value(s) of {column!r} are missing, NaN or infinite and are left out")
    return arr


def _snippet(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _md(text: Any) -> str:
    """Text safe in a Markdown table cell: HTML escaped, Markdown punctuation backslashed, on one line."""
    escaped = html.escape(str(text), quote=False)
    escaped = re.sub(r"([\\`*_\[\]|#~])", r"\\\1", escaped)
    return escaped.replace("\r\n", "\n").replace("\n", "<br>")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) if c != "" else "*(empty)*" for c in row) + " |" for row in rows]
    return lines


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, first_cells: Sequence[str] | None = None,
                wide_last: int = 0) -> str:
    """An HTML table with escaped cells; ``first_cells`` are trusted HTML put before each row's first cell."""
    head = "".join(f"<th>{_h(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            prefix = first_cells[r] if first_cells is not None and c == 0 else ""
            klass = " class='text'" if wide_last and c >= len(row) - wide_last else ""
            content = _h(cell) if cell != "" else "<span class='muted'>(empty)</span>"
            cells.append(f"<td{klass}>{prefix}{content}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_head(title: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_h(title)}</title>
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
