"""Reading run logs: the Trainer's ``trainer_state.json``, the monitor's samples, the run description.

The logged keys and their groups come from the modules that log them: the
generation monitor (``qdc/gen/...``), the collapse detector (``qdc/collapse/...``),
the sampler's telemetry (``qdc/sampler/...``) and the trainer (``qdc/train/entropy``).
Everything here is pure and works without matplotlib.

>>> series = log_series([{"loss": 2.0, "step": 1}, {"qdc/collapse/level": 1.0, "step": 4},
...                      {"qdc/collapse/level": 2.0, "step": 6}])
>>> collapse_steps(series)
(4, 6)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..callbacks.collapse import LEVEL_KEY as COLLAPSE_KEY
from ..callbacks.collapse import LOG_PREFIX as COLLAPSE_PREFIX
from ..callbacks.generation_metrics import DIVERSITY_METRICS, GENERATION_METRICS, SAMPLES_FILE, SCOPES
from ..callbacks.generation_metrics import PREFIX as GEN_PREFIX
from ..data.sampler import TELEMETRY_KEYS as SAMPLER_KEYS
from ..data.sampler import TELEMETRY_PREFIX as SAMPLER_PREFIX
from ..trainer import ENTROPY_KEY

__all__ = [
    "COLLAPSE_KEY",
    "DIVERSITY_METRICS",
    "GENERATION_KEYS",
    "GROUPS",
    "RUN_CONFIG_FILE",
    "RunLog",
    "SAMPLER_KEYS",
    "STATE_FILE",
    "TRAINING_KEYS",
    "collapse_culprits",
    "collapse_steps",
    "find_state_file",
    "is_number",
    "key_group",
    "load_run",
    "log_series",
    "read_samples",
    "watched_key",
]

STATE_FILE = "trainer_state.json"
RUN_CONFIG_FILE = "qdc_run.json"
QDC_PREFIX = "qdc/"
"""The prefix of every key this library logs."""
TRL_ENTROPY_KEY = "entropy"
"""TRL's trainers log the entropy of the model's predictions under this key."""

TRAINING_KEYS = ("loss", "eval_loss", ENTROPY_KEY, TRL_ENTROPY_KEY)
GENERATION_KEYS = tuple(GEN_PREFIX + name for name in GENERATION_METRICS)
DIVERSITY_PREFIXES = tuple(f"{GEN_PREFIX}{scope}/" for scope in SCOPES)
GROUPS = ("training", "diversity", "generation", "sampler", "collapse", "other")
"""The figures of a run report, in page order; :func:`key_group` puts each logged key in one (or none)."""


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
        if not is_number(step):
            continue
        for key, value in entry.items():
            if key == "step" or not is_number(value) or not math.isfinite(value):
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
            if isinstance(row, dict) and is_number(row.get("step")):
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
        raise ValueError(
            f"{str(state_file)!r} (run {str(folder)!r}) has no log_history list: is it a trainer_state.json?"
        )
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
    if not is_number(global_step):
        global_step = max(logged_steps, default=0)
    warning, collapse = collapse_steps(series)
    return RunLog(
        label=label if label is not None else _default_label(folder, state_file),
        folder=folder,
        state_file=state_file,
        global_step=int(global_step),
        series=series,
        samples=samples,
        config=config,
        warning_step=warning,
        collapse_step=collapse,
        notes=notes,
    )


def key_group(key: str) -> str | None:
    """The figure a logged key belongs to: one of ``GROUPS``, or None (not plotted, e.g. ``grad_norm``).

    >>> [key_group(k) for k in ("loss", "qdc/gen/per_input/vendi", "qdc/gen/length", "qdc/sampler/ess_ratio",
    ...                         "qdc/collapse/level", "qdc/probe/score", "grad_norm")]
    ['training', 'diversity', 'generation', 'sampler', 'collapse', 'other', None]
    """
    if key in TRAINING_KEYS:
        return "training"
    if key.startswith(DIVERSITY_PREFIXES):
        return "diversity"
    if key in GENERATION_KEYS:
        return "generation"
    if key.startswith(SAMPLER_PREFIX):
        return "sampler"
    if key.startswith(COLLAPSE_PREFIX):
        return "collapse"
    if key.startswith(QDC_PREFIX):
        return "other"
    return None


def watched_key(name: str, keys: Any) -> str:
    """The watched series behind ``qdc/collapse/<name>/...``: the detector drops a leading ``qdc/`` of the key
    (:func:`qdc_trainer.callbacks.series.series_name`: ``qdc/collapse/gen/entropy/level`` watches ``qdc/gen/entropy``);
    runs logged before that kept it.

    >>> watched_key("gen/entropy", {"qdc/gen/entropy"}), watched_key("entropy", {"entropy"})
    ('qdc/gen/entropy', 'entropy')
    """
    return f"{QDC_PREFIX}{name}" if name not in keys and f"{QDC_PREFIX}{name}" in keys else name


_SERIES_LEVEL = re.compile(re.escape(COLLAPSE_PREFIX) + r"(.+)/level")


def collapse_culprits(run: RunLog, step: int | None, level: int) -> list[str]:
    """The watched series whose own level (``qdc/collapse/<name>/level``) was at least ``level`` at ``step``."""
    if step is None:
        return []
    found = []
    for key, (steps, values) in run.series.items():
        match = _SERIES_LEVEL.fullmatch(key)
        if match and np.any((steps == step) & (values >= level)):
            found.append(watched_key(match.group(1), run.series))
    return sorted(found)


def is_number(value: Any) -> bool:
    """A real number, not a boolean."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _default_label(folder: Path, state_file: Path) -> str:
    name = folder.name if folder.is_dir() else state_file.parent.name
    return name or str(folder)


def _look_up(folder: Path, name: str) -> Path | None:
    for place in (folder, folder.parent) if re.fullmatch(r"checkpoint-\d+", folder.name) else (folder,):
        if (place / name).is_file():
            return place / name
    return None
