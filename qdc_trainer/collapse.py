"""Collapse signals on one logged scalar series: the pure core of the collapse detector.

A :class:`SeriesDetector` watches one series (for example ``qdc/gen/distinct_2``
or TRL's ``entropy``) in which one direction is bad: a drop for diversity, a rise
for self-BLEU or repetition. From the first ``warmup`` finite observations it
takes a baseline; after that each observation updates an exponential moving
average (EMA) and three signals, all signed so that positive means worse:

- ``change``: ``(EMA - baseline) / max(|baseline|, min_scale)`` (or the plain
  difference with ``relative=False``). ``min_scale`` (default 0.1) keeps a baseline
  at or near 0 from blowing a tiny change up into a collapse (it warns when that
  happens): a rate or share that starts at 0 (``qdc/gen/empty_rate``,
  ``qdc/gen/repetition``) needs absolute thresholds, ``relative=False``, as
  :data:`KNOWN_SERIES` gives it;
- ``slope``: the least-squares slope of the last ``slope_window`` EMA values per
  observation, on the same scale;
- ``streak``: how many observations in a row moved the EMA the bad way.

Level 2 (collapse) when ``change >= collapse_change``; level 1 (warning) when
``change >= warn_change``, or (only when ``patience`` is set) when
``streak >= patience`` and ``slope >= warn_slope``; else 0. NaN and inf values
are skipped and counted, never averaged in.

No published threshold exists for any of this. The defaults come from
``benchmarks/calibrate_collapse.py`` (planted collapse against healthy and
domain-shifted fine-tuning, 5 seeds each, checked on 5 more): a baseline from the
first observation (the model before fine-tuning, when the generation monitor
evaluates at the start), EMA 0.5, and per-series thresholds in
:data:`DEFAULT_WATCH`. The slope rule is off by default: in that calibration it
raised false alarms on healthy runs and never warned earlier than the change rule.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ._logging import log_record

__all__ = [
    "CollapseDetectorCallback",
    "CollapseSignal",
    "DEFAULT_WATCH",
    "KNOWN_SERIES",
    "SeriesDetector",
    "series_name",
    "watch_from_keys",
]

logger = logging.get_logger(__name__)

DIRECTIONS = ("decrease", "increase")


@dataclass(frozen=True)
class CollapseSignal:
    """What a :class:`SeriesDetector` concluded from the observations so far."""

    key: str
    level: int  # 0 healthy or not enough data, 1 warning, 2 collapse
    step: int | None
    value: float | None  # the last finite observation
    smoothed: float | None
    baseline: float | None
    change: float = 0.0
    slope: float = 0.0
    streak: int = 0
    reason: str = ""


@dataclass
class SeriesDetector:
    """Watch one scalar series for drift in its bad direction.

    >>> d = SeriesDetector("qdc/gen/distinct_2", warmup=2, ema=1.0)
    >>> [d.update(step, v).level for step, v in enumerate([0.8, 0.8, 0.75, 0.6, 0.4])]
    [0, 0, 0, 1, 2]
    >>> d.first_warning_step, d.first_collapse_step
    (3, 4)
    """

    key: str
    direction: str = field(default="decrease", metadata={"help": "the bad direction: 'decrease' or 'increase'"})
    warmup: int = field(default=1, metadata={"help": "finite observations averaged into the baseline"})
    ema: float = field(default=0.5, metadata={"help": "weight of a new observation in the EMA (1 = no smoothing)"})
    warn_change: float = field(default=0.15, metadata={"help": "relative worsening that warns"})
    collapse_change: float = field(default=0.35, metadata={"help": "relative worsening that declares collapse"})
    patience: int | None = field(
        default=None,
        metadata={"help": "observations in a row that worsen before the slope can warn (None: slope rule off)"},
    )
    slope_window: int = field(default=4, metadata={"help": "EMA values in the slope fit"})
    warn_slope: float = field(default=0.03, metadata={"help": "worsening per observation that warns after patience"})
    relative: bool = field(default=True, metadata={"help": "scale by the baseline (False: plain differences)"})
    min_scale: float = field(
        default=0.1,
        metadata={
            "help": "smallest |baseline| used as the relative scale (a baseline near 0 does not blow changes up)"
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("key must be the non-empty name of a logged series")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction={self.direction!r} for {self.key!r} must be one of {DIRECTIONS}")
        for name in ("warmup", "patience", "slope_window"):
            value = getattr(self, name)
            if name == "patience" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "slope_window" else 1):
                raise ValueError(
                    f"{name}={value!r} for {self.key!r} must be an int >= {2 if name == 'slope_window' else 1}"
                )
        for name in ("ema", "warn_change", "collapse_change", "warn_slope", "min_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name}={value!r} for {self.key!r} must be a number")
            if not math.isfinite(value):
                raise ValueError(f"{name}={value!r} for {self.key!r} must be a finite number")
        if not isinstance(self.relative, (bool, np.bool_)):
            raise TypeError(f"relative={self.relative!r} for {self.key!r} must be True or False")
        if not 0 < self.ema <= 1:
            raise ValueError(f"ema={self.ema!r} for {self.key!r} must be in (0, 1]")
        if not 0 < self.warn_change <= self.collapse_change:
            raise ValueError(f"need 0 < warn_change <= collapse_change for {self.key!r}")
        if self.warn_slope <= 0 or self.min_scale <= 0:
            raise ValueError(f"warn_slope and min_scale for {self.key!r} must be > 0")
        self.threshold_factor = 1.0
        self.reset()

    def widen(self, factor: float) -> SeriesDetector:
        """Multiply ``warn_change`` and ``collapse_change`` by ``factor`` (>= 1) when judging, for a noisier series
        than the thresholds were set for; the configuration (and so :meth:`state_dict`) is unchanged. Returns self.

        >>> d = SeriesDetector("x", ema=1.0, relative=False, warn_change=0.1, collapse_change=0.25).widen(1.5)
        >>> [d.update(step, v).level for step, v in enumerate([0.8, 0.68, 0.62, 0.4])]
        [0, 0, 1, 2]
        >>> d.signal.reason
        'fell by 0.4 from baseline 0.8 (collapse at 0.375)'
        """
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor < 1:
            raise ValueError(f"factor={factor!r} for {self.key!r} must be a finite number >= 1")
        self.threshold_factor = float(factor)
        return self

    def reset(self) -> None:
        """Forget every observation."""
        self._warmup_values: list[float] = []
        self.baseline: float | None = None
        self.smoothed: float | None = None
        self._recent: list[float] = []
        self.streak = 0
        self.skipped = 0
        self.first_warning_step: int | None = None
        self.first_collapse_step: int | None = None
        self.signal = CollapseSignal(self.key, 0, None, None, None, None, reason="warming up")

    @property
    def _sign(self) -> float:
        return -1.0 if self.direction == "decrease" else 1.0

    def _scale(self) -> float:
        return max(abs(self.baseline), self.min_scale) if self.relative else 1.0

    def _amount(self, change: float) -> str:
        """A change in words' units: a percentage of the baseline when relative, else the plain difference."""
        return f"{abs(change):.1%}" if self.relative else f"{abs(change):.3g}"

    def _moved(self, change: float) -> str:
        """``change`` (signed so that positive is worse) as a movement of the series: 'fell by 0.162',
        'rose by 12.0%'."""
        falling = (change > 0) == (self.direction == "decrease")
        return f"{'fell' if falling else 'rose'} by {self._amount(change)}"

    def update(self, step: int, value: Any) -> CollapseSignal:
        """Add one observation; returns the current signal (unchanged for a NaN or inf value)."""
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{self.key!r}: observation {value!r} at step {step} is not a number") from None
        if not math.isfinite(x):
            self.skipped += 1
            return self.signal
        if self.baseline is None:
            self._warmup_values.append(x)
            if len(self._warmup_values) < self.warmup:
                self.signal = CollapseSignal(self.key, 0, step, x, None, None, reason="warming up")
                return self.signal
            self.baseline = float(np.mean(self._warmup_values))
            self.smoothed = self.baseline
            if self.relative and abs(self.baseline) < self.min_scale:
                logger.warning(
                    f"{self.key!r}: baseline {self.baseline:.3g} is below min_scale={self.min_scale:g}, so changes are "
                    f"measured in units of {self.min_scale:g}, not relative to the baseline; for a rate or share that "
                    "starts near 0, use relative=False"
                )
            self._recent = [self.baseline]
            self.signal = CollapseSignal(self.key, 0, step, x, self.smoothed, self.baseline, reason="baseline set")
            return self.signal
        previous = self.smoothed
        self.smoothed = self.ema * x + (1 - self.ema) * previous
        self.streak = self.streak + 1 if self._sign * (self.smoothed - previous) > 0 else 0
        self._recent = (self._recent + [self.smoothed])[-self.slope_window :]
        change = self._sign * (self.smoothed - self.baseline) / self._scale()
        slope = 0.0
        if len(self._recent) >= 2:
            slope = self._sign * float(np.polyfit(np.arange(len(self._recent)), self._recent, 1)[0]) / self._scale()
        warn_change, collapse_change = (
            self.warn_change * self.threshold_factor,
            self.collapse_change * self.threshold_factor,
        )
        if change >= collapse_change:
            level, reason = (
                2,
                f"{self._moved(change)} from baseline {self.baseline:.3g} "
                f"(collapse at {self._amount(collapse_change)})",
            )
        elif change >= warn_change:
            level, reason = (
                1,
                f"{self._moved(change)} from baseline {self.baseline:.3g} (warning at {self._amount(warn_change)})",
            )
        elif self.patience is not None and self.streak >= self.patience and slope >= self.warn_slope:
            per = " of the baseline" if self.relative else ""
            level, reason = 1, f"worsened {self.streak} times in a row: {self._moved(slope)}{per} per observation"
        else:
            level, reason = 0, "healthy"
        if level >= 1 and self.first_warning_step is None:
            self.first_warning_step = step
        if level == 2 and self.first_collapse_step is None:
            self.first_collapse_step = step
        self.signal = CollapseSignal(
            self.key, level, step, x, self.smoothed, self.baseline, change, slope, self.streak, reason
        )
        return self.signal

    def state_dict(self) -> dict[str, Any]:
        """Observations so far (JSON-serialisable), for checkpoints."""
        return {
            "config": {k: v for k, v in asdict(self).items()},
            "warmup_values": list(self._warmup_values),
            "baseline": self.baseline,
            "smoothed": self.smoothed,
            "recent": list(self._recent),
            "streak": self.streak,
            "skipped": self.skipped,
            "first_warning_step": self.first_warning_step,
            "first_collapse_step": self.first_collapse_step,
            "signal": asdict(self.signal),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the configuration must be the same (a ``ValueError`` names each setting
        that differs, with the saved and the current value). On an error the detector is left as it was."""
        if not isinstance(state, dict):
            raise ValueError(f"a saved series detector state must be a dict, got {type(state).__name__}")
        missing = [k for k in _SERIES_STATE_KEYS if k not in state]
        if missing:
            raise ValueError(
                f"saved detector state for {self.key!r} lacks {missing}: incomplete or not a SeriesDetector state"
            )
        saved, mine = state["config"], asdict(self)
        if not isinstance(saved, dict):
            raise ValueError(f"saved detector config for {self.key!r} is not a dict: {saved!r}")
        differing = [
            (k, saved.get(k), mine.get(k)) for k in sorted(set(saved) | set(mine)) if saved.get(k) != mine.get(k)
        ]
        if differing:
            raise ValueError(
                f"saved detector for {saved.get('key', self.key)!r} was configured differently: "
                + "; ".join(f"{k}={a!r} saved, {b!r} now" for k, a, b in differing)
                + ". Use the saved settings to continue from its baseline"
            )
        try:
            warmup_values = [_finite(v, "warmup_values") for v in state["warmup_values"]]
            recent = [_finite(v, "recent") for v in state["recent"]]
            baseline = _finite_or_none(state["baseline"], "baseline")
            smoothed = _finite_or_none(state["smoothed"], "smoothed")
            streak, skipped = _count(state["streak"], "streak"), _count(state["skipped"], "skipped")
            first_warning = _step_or_none(state["first_warning_step"], "first_warning_step")
            first_collapse = _step_or_none(state["first_collapse_step"], "first_collapse_step")
            signal = CollapseSignal(**state["signal"])
        except TypeError as err:  # wrong types, or unknown / missing signal fields
            raise ValueError(f"saved detector state for {self.key!r} is malformed: {err}") from None
        if (
            (baseline is None) != (smoothed is None)
            or len(warmup_values) > self.warmup
            or signal.level not in (0, 1, 2)
        ):
            raise ValueError(f"saved detector state for {self.key!r} is inconsistent (baseline, EMA, warm-up or level)")
        self._warmup_values, self._recent = warmup_values, recent
        self.baseline, self.smoothed = baseline, smoothed
        self.streak, self.skipped = streak, skipped
        self.first_warning_step, self.first_collapse_step = first_warning, first_collapse
        self.signal = signal


_SERIES_STATE_KEYS = (
    "config",
    "warmup_values",
    "baseline",
    "smoothed",
    "recent",
    "streak",
    "skipped",
    "first_warning_step",
    "first_collapse_step",
    "signal",
)


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"saved {name} holds {value!r}, not a finite number")
    return float(value)


def _finite_or_none(value: Any, name: str) -> float | None:
    return None if value is None else _finite(value, name)


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"saved {name}={value!r} is not an int >= 0")
    return value


def _step_or_none(value: Any, name: str) -> int | None:
    return None if value is None else _count(value, name)


# --------------------------------------------------------------------------- the Trainer callback

ACTIONS = ("log", "warn", "checkpoint", "stop")
LOG_PREFIX = "qdc/collapse/"
"""Prefix of the logged keys: ``qdc/collapse/level`` and ``qdc/collapse/<series_name(key)>/{level,change}``."""
LEVEL_KEY = LOG_PREFIX + "level"
"""The overall level logged at each update: 0 healthy, 1 warning, 2 collapse."""
STATE_FILE = "qdc_collapse_detector.json"
"""File name of the detector state in checkpoints of earlier qdc-trainer versions (read for compatibility only)."""

STATE_KEY = "qdc_trainer.CollapseDetectorCallback"
"""Entry of ``TrainerState.stateful_callbacks`` (saved in each checkpoint's ``trainer_state.json``) that holds
the detector states, one per watched set of series."""


REFERENCE_SAMPLES = 64
"""Samples per generation-monitor evaluation (16 probe prompts x 4) that the calibrated thresholds were set for."""

DEFAULT_WATCH: dict[str, dict[str, Any]] = {
    # bounded in [0, 1]: absolute changes; entropy (nats): relative. Calibrated in benchmarks/calibrate_collapse.py.
    "qdc/gen/per_input/distinct_2": dict(direction="decrease", relative=False, warn_change=0.1, collapse_change=0.25),
    "qdc/gen/across_input/distinct_2": dict(
        direction="decrease", relative=False, warn_change=0.1, collapse_change=0.25
    ),
    "qdc/gen/per_input/self_bleu": dict(direction="increase", relative=False, warn_change=0.1, collapse_change=0.25),
    "qdc/gen/entropy": dict(direction="decrease", relative=True, warn_change=0.1, collapse_change=0.35),
}
"""The series a default :class:`CollapseDetectorCallback` watches, with their calibrated settings."""

KNOWN_SERIES: dict[str, dict[str, Any]] = {
    **DEFAULT_WATCH,
    "qdc/gen/across_input/self_bleu": dict(direction="increase", relative=False, warn_change=0.15, collapse_change=0.3),
    # rates in [0, 1] that start at (or near) 0: only absolute changes mean anything
    "qdc/gen/empty_rate": dict(direction="increase", relative=False, warn_change=0.1, collapse_change=0.25),
    "qdc/gen/repetition": dict(direction="increase", relative=False, warn_change=0.1, collapse_change=0.25),
}
"""Settings :func:`watch_from_keys` uses for a key named alone (the diversity series and entropy calibrated in
benchmarks/calibrate_collapse.py; the two rates, which start at 0 on a healthy model, with absolute thresholds
that no healthy or shifted calibration run came near)."""


def series_name(key: str) -> str:
    """The name of a watched series inside the detector's logged keys: ``key`` without a leading ``qdc/``.

    >>> series_name("qdc/gen/per_input/distinct_2"), series_name("entropy")
    ('gen/per_input/distinct_2', 'entropy')
    >>> f"qdc/collapse/{series_name('qdc/gen/entropy')}/level"
    'qdc/collapse/gen/entropy/level'
    """
    return key[len("qdc/") :] if key.startswith("qdc/") else key


def _default_watch() -> list[SeriesDetector]:
    return [SeriesDetector(key, **settings) for key, settings in DEFAULT_WATCH.items()]


def watch_from_keys(keys: list[str]) -> list[SeriesDetector]:
    """Detectors for ``"key"`` (a series of :data:`KNOWN_SERIES`, with its calibrated settings) or
    ``"key:decrease"`` / ``"key:increase"`` (any logged series, default thresholds).

    For a task with one right answer per prompt (arithmetic, code), per-input diversity and
    entropy fall as the model learns; watch the across-input series there.

    >>> [
    ...     (d.key, d.direction, d.relative)
    ...     for d in watch_from_keys(["qdc/gen/across_input/self_bleu", "entropy:decrease"])
    ... ]
    [('qdc/gen/across_input/self_bleu', 'increase', False), ('entropy', 'decrease', True)]
    """
    detectors = []
    for item in keys:
        key, _, direction = item.rpartition(":") if item.endswith((":decrease", ":increase")) else (item, "", "")
        if direction:
            detectors.append(SeriesDetector(key, direction))
        elif key in KNOWN_SERIES:
            detectors.append(SeriesDetector(key, **KNOWN_SERIES[key]))
        else:
            raise ValueError(
                f"{key!r} has no known settings: write '{key}:decrease' or '{key}:increase' "
                f"(known: {sorted(KNOWN_SERIES)})"
            )
    return detectors


class CollapseDetectorCallback(TrainerCallback):
    """Watch logged series and flag collapse: log it, warn, checkpoint the last healthy model, stop.

    Args:
        trainer: the Trainer to log through (its base ``Trainer.log`` reaches TensorBoard, W&B
            and MLflow; keys added to ``logs`` by a callback would not). Set it later with
            :meth:`bind` if the callback is created before the Trainer; ``QDCTrainer`` and
            ``QDCTrainerMixin`` bind it themselves. Callback events do not receive the Trainer,
            so with ``"log"`` in ``actions`` an unbound detector raises at ``on_train_begin``
            (as the generation monitor does) instead of staying silent.
        watch: :class:`SeriesDetector` objects (each with its own thresholds), or
            ``{key: direction}`` (default thresholds); default: :data:`DEFAULT_WATCH`, the
            generation monitor's distinct-2 per input and across inputs (a drop of 0.1 warns,
            0.25 is collapse), per-input self-BLEU (a rise of 0.1 / 0.25) and next-token
            entropy (a 10% / 35% drop). Add TRL's ``entropy`` or ``qdc/train/entropy`` with
            ``SeriesDetector(key, "decrease", ...)``: per-step training entropy also falls while a
            model adapts to a new domain, so give it wide thresholds (see the README).
        actions: any of ``"log"`` (``qdc/collapse/<name>/level``, ``.../change`` and
            ``qdc/collapse/level``), ``"warn"`` (a warning naming the series, its baseline and
            current value), ``"checkpoint"`` (save at the first warning: the last healthy model),
            ``"stop"`` (stop training at the first collapse); a single string is one action.
        missing_after: logs (an int >= 1) after which a watched key that never appeared is
            reported (once).
        reference_samples: the samples per evaluation (probe prompts x samples per prompt) that the
            thresholds of the monitor's series (``qdc/gen/...``) are meant for; default 64, the 16 x 4 of
            the calibration. When the trainer's :class:`~qdc_trainer.GenerationMonitorCallback` draws
            n < 64 per evaluation, those thresholds are widened by sqrt(64 / n) at ``on_train_begin``
            (x1.41 at 8 x 4), with a warning: fewer samples are noisier, and with the 16 x 4 thresholds
            the calibration measured 1 false alarm in 20 healthy runs at 8 x 4, none once widened (see
            the README). None: use the thresholds as given.
        start_step: observations logged before this optimizer step are ignored, so the baseline
            comes from the first one at or after it. Leave it at 0 when fine-tuning a trained model
            (the baseline is then the model before fine-tuning); when training from scratch, set it
            to a step where the model has learned the task's format: a random model's generations
            are maximally diverse, and learning anything looks like collapse next to them.

    The decision is the same on every process (the highest level over processes), so no
    rank stops alone. Its state is saved in each checkpoint's ``trainer_state.json``
    (``stateful_callbacks``, entry :data:`STATE_KEY`), written before the Trainer deletes
    older checkpoints, and restored when training resumes from any checkpoint (wherever
    it lies). A fresh ``train()`` starts from nothing.

    Logged keys: ``qdc/collapse/level`` (0 healthy, 1 warning, 2 collapse) and, per watched
    series, ``qdc/collapse/<name>/level`` and ``qdc/collapse/<name>/change``, where ``<name>`` is
    the watched key without a leading ``qdc/`` (:func:`series_name`: ``qdc/gen/entropy`` logs
    ``qdc/collapse/gen/entropy/level``, TRL's ``entropy`` ``qdc/collapse/entropy/level``). The
    change is in the series' bad direction (> 0 is worse): absolute, or a fraction of the baseline
    for a relative series. The records go through the base ``Trainer.log``, so a subclass's
    ``log()`` (TRL's metric buffer) never moves the trainer's own metrics onto them.

    >>> CollapseDetectorCallback(actions="warn").actions
    ('warn',)
    """

    def __init__(
        self,
        trainer: Any = None,
        watch: list[SeriesDetector] | dict[str, str] | None = None,
        actions: tuple[str, ...] | str = ("log", "warn", "checkpoint", "stop"),
        missing_after: int = 20,
        start_step: int = 0,
        reference_samples: int | None = REFERENCE_SAMPLES,
    ) -> None:
        if watch is None:
            detectors = _default_watch()
        elif isinstance(watch, dict):
            detectors = [SeriesDetector(key, direction) for key, direction in watch.items()]
        else:
            detectors = list(watch)
        if not detectors or not all(isinstance(d, SeriesDetector) for d in detectors):
            raise ValueError("watch must be a non-empty list of SeriesDetector or a {key: direction} dict")
        keys = [d.key for d in detectors]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a series is watched twice: {keys}")
        names = [series_name(key) for key in keys]
        if len(set(names)) != len(names):
            raise ValueError(f"two watched series would log under the same qdc/collapse/<name>/... keys: {keys}")
        if isinstance(actions, str):  # one action named alone
            actions = (actions,)
        if not isinstance(actions, (list, tuple, set, frozenset)) or not all(isinstance(a, str) for a in actions):
            raise TypeError(f"actions must be a tuple of action names from {ACTIONS}, got {actions!r}")
        unknown = set(actions) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown action(s) {sorted(unknown)}; choose from {ACTIONS}")
        if isinstance(missing_after, bool) or not isinstance(missing_after, int) or missing_after < 1:
            raise ValueError(
                f"missing_after={missing_after!r} must be an int >= 1 (logs before a missing key is reported)"
            )
        self.detectors = {d.key: d for d in detectors}
        self.actions = tuple(a for a in ACTIONS if a in actions)
        self.missing_after = missing_after
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"start_step={start_step!r} must be an int >= 0")
        self.start_step = start_step
        if reference_samples is not None and (
            isinstance(reference_samples, bool) or not isinstance(reference_samples, int) or reference_samples < 1
        ):
            raise ValueError(f"reference_samples={reference_samples!r} must be an int >= 1 or None")
        self.reference_samples = reference_samples
        self.trainer = trainer
        self._logging = False
        self._run_state: Any = None
        self.reset()

    def bind(self, trainer: Any) -> CollapseDetectorCallback:
        """Attach the Trainer whose ``log`` and accelerator the callback uses; returns self."""
        self.trainer = trainer
        return self

    # ------------------------------------------------------------------ events

    def on_train_begin(self, args, state, control, **kwargs):
        self._require_trainer()
        self._fit_to_monitor()
        self._start_run(args, state)
        return control

    def _fit_to_monitor(self) -> None:
        """Widen the thresholds of the monitor's series (``qdc/gen/...``) when it draws fewer samples per
        evaluation (probe prompts x samples per prompt) than ``reference_samples``: the sampling noise of a mean
        over n samples grows as 1 / sqrt(n), so the thresholds grow by sqrt(reference_samples / n)."""
        from .monitor import PREFIX, GenerationMonitorCallback

        handler = getattr(self.trainer, "callback_handler", None)
        monitors = [cb for cb in getattr(handler, "callbacks", []) if isinstance(cb, GenerationMonitorCallback)]
        factor = 1.0
        if self.reference_samples is not None and len(monitors) == 1:
            drawn = len(monitors[0].prompts) * monitors[0].config.num_samples
            factor = max(1.0, math.sqrt(self.reference_samples / drawn))
        widened = []
        for key, detector in self.detectors.items():
            if key.startswith(PREFIX):
                detector.widen(factor)
                widened.append(key)
        if factor > 1 and widened:
            logger.warning(
                f"the generation monitor draws {drawn} samples per evaluation, fewer than the {self.reference_samples} "
                f"the collapse thresholds were set for: the thresholds of {widened} are widened x{factor:.2f} "
                "(more probe prompts or samples detect collapse sooner; reference_samples=None turns this off)"
            )

    def _require_trainer(self) -> None:
        """Logging needs the Trainer, which callback events do not receive: fail at the start, not silently."""
        if "log" in self.actions and self.trainer is None:
            raise ValueError(
                "CollapseDetectorCallback needs the trainer to log qdc/collapse/*: pass trainer=... or call "
                "bind(trainer) (QDCTrainer and QDCTrainerMixin bind it themselves), or leave 'log' out of actions"
            )

    def _start_run(self, args, state) -> None:
        """At the first event of a ``train()`` call (a new ``TrainerState``): a fresh run starts from
        nothing; a resumed one restores the state saved with its checkpoint. A callback placed before
        this one may log during ``on_train_begin``; that is why ``on_log`` checks too.

        The state travels in ``state.stateful_callbacks`` (see :meth:`_export`), which the Trainer loads
        from the ``trainer_state.json`` of the checkpoint it resumes from, wherever that lies."""
        if self._run_state is state:
            return
        self._run_state = state
        if state.global_step == 0:
            self.reset()
        elif not self._restored:  # load(checkpoint) was not called before train()
            saved = self._saved_state(getattr(state, "stateful_callbacks", None))
            if saved is not None:
                try:
                    self.load_state_dict(saved)
                except ValueError as err:
                    raise ValueError(
                        f"collapse detector state in the trainer_state.json of the checkpoint resumed at step "
                        f"{state.global_step} ({STATE_KEY}): {err}"
                    ) from None
            else:
                legacy = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}", STATE_FILE)
                if os.path.isfile(legacy):  # a checkpoint of an earlier version, in output_dir
                    self._load_json(legacy)
                else:
                    logger.warning(
                        f"resuming at step {state.global_step} from a checkpoint without a collapse detector state for "
                        f"{sorted(self.detectors)}: the collapse detector takes a new baseline"
                    )
        self._export(state)

    def _state_id(self) -> str:
        """The key of this detector's state in the checkpoint entry: its watched series."""
        return json.dumps(sorted(self.detectors))

    def _saved_state(self, stateful_callbacks: Any) -> dict[str, Any] | None:
        """This detector's state in a ``stateful_callbacks`` mapping, or None (a warning says when the
        checkpoint holds states for other watched series only)."""
        entry = stateful_callbacks.get(STATE_KEY) if isinstance(stateful_callbacks, dict) else None
        if not isinstance(entry, dict) or not entry:
            return None
        if self._state_id() in entry:
            return entry[self._state_id()]
        logger.warning(
            f"the checkpoint holds collapse detector states for {[json.loads(k) for k in entry]}, this detector "
            f"watches {sorted(self.detectors)}: it takes a new baseline"
        )
        return None

    def _export(self, state: Any) -> None:
        """Put the current state into ``state.stateful_callbacks``, which the Trainer writes into each checkpoint's
        ``trainer_state.json`` before it deletes older checkpoints. Called whenever the saved state changes.

        This callback is deliberately no ``ExportableState``: with ``restore_callback_states_from_checkpoint=True``
        the Trainer would replace it by ``CollapseDetectorCallback(**args)``, a new instance without its Trainer
        (no more logging), its thresholds or the user's reference; under :data:`STATE_KEY`, no callback class
        name, that setting leaves it alone."""
        stateful = getattr(state, "stateful_callbacks", None)
        if isinstance(stateful, dict):
            entry = stateful.get(STATE_KEY)
            if not isinstance(entry, dict):
                entry = stateful[STATE_KEY] = {}
            entry[self._state_id()] = self.state_dict()

    def reset(self) -> None:
        """Forget every observation and decision."""
        for detector in self.detectors.values():
            detector.reset()
        self.level = 0
        self.warned_at: int | None = None
        self.stopped_at: int | None = None
        self._logs_seen = 0
        self._seen_keys: set[str] = set()
        self._reported_missing = False
        self._restored = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._logging or not logs:
            return control
        self._start_run(args, state)
        if state.global_step < self.start_step:
            return control
        self._logs_seen += 1
        step = state.global_step
        changed = {}
        for key, detector in self.detectors.items():
            if key in logs:
                self._seen_keys.add(key)
                changed[key] = detector.update(step, logs[key])
        self._report_missing()
        if not changed:
            return control
        level = self._agree(max(d.signal.level for d in self.detectors.values()), args)
        if "log" in self.actions:
            self._require_trainer()
            entry = {LEVEL_KEY: float(level)}
            for key, signal in changed.items():
                entry[f"{LOG_PREFIX}{series_name(key)}/level"] = float(signal.level)
                entry[f"{LOG_PREFIX}{series_name(key)}/change"] = float(signal.change)
            self._logging = True
            try:
                log_record(self.trainer, entry)  # not trainer.log: TRL's would take its metric buffer onto this record
            finally:
                self._logging = False
        if level > self.level and "warn" in self.actions:
            worst = max(self.detectors.values(), key=lambda d: d.signal.level).signal
            name = "collapse" if level == 2 else "collapse warning"
            logger.warning(
                f"qdc {name} at step {step}: {worst.key} {worst.reason}; now {worst.smoothed:.4g} "
                f"(moving average), last value {worst.value:.4g}"
            )
        if level >= 1 and self.warned_at is None:
            self.warned_at = step
            if "checkpoint" in self.actions:
                control.should_save = True
        if level == 2 and "stop" in self.actions and self.stopped_at is None:
            self.stopped_at = step
            control.should_training_stop = True
        self.level = max(self.level, level)
        self._export(state)
        return control

    # ------------------------------------------------------------------ helpers

    def _agree(self, level: int, args: Any = None) -> int:
        """The highest level over all processes, so that every rank takes the same decision."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = getattr(args if args is not None else getattr(self.trainer, "args", None), "device", None)
            if device is None or dist.get_backend() == "gloo":
                device = torch.device("cpu")
            t = torch.tensor([level], dtype=torch.int64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return int(t.item())
        return level

    def _report_missing(self) -> None:
        if self._reported_missing or self._logs_seen < self.missing_after:
            return
        missing = sorted(set(self.detectors) - self._seen_keys)
        if missing:
            logger.warning(
                f"the collapse detector watches {missing}, which were not logged in {self._logs_seen} logs; "
                "check the key names (a GenerationMonitorCallback logs qdc/gen/...; TRL logs entropy)"
            )
        self._reported_missing = True

    def state_dict(self) -> dict[str, Any]:
        """Decisions and every watched series' observations (JSON-serialisable)."""
        return {
            "level": self.level,
            "warned_at": self.warned_at,
            "stopped_at": self.stopped_at,
            "detectors": {key: d.state_dict() for key, d in self.detectors.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. The watched series and their settings must be the same; a ``ValueError``
        says what differs. On an error the callback is left as it was."""
        if not isinstance(state, dict) or not isinstance(state.get("detectors"), dict):
            raise ValueError("a saved collapse detector state must be a dict with a 'detectors' dict")
        if set(state["detectors"]) != set(self.detectors):
            raise ValueError(f"saved detector watches {sorted(state['detectors'])}, this one {sorted(self.detectors)}")
        level, warned_at, stopped_at = state.get("level"), state.get("warned_at"), state.get("stopped_at")
        if level not in (0, 1, 2) or isinstance(level, bool):
            raise ValueError(f"saved collapse level={level!r} is not 0, 1 or 2")
        warned_at, stopped_at = _step_or_none(warned_at, "warned_at"), _step_or_none(stopped_at, "stopped_at")
        backup = {key: d.state_dict() for key, d in self.detectors.items()}
        try:
            for key, detector_state in state["detectors"].items():
                self.detectors[key].load_state_dict(detector_state)
        except ValueError:
            for key, detector_state in backup.items():
                self.detectors[key].load_state_dict(detector_state)
            raise
        self.level, self.warned_at, self.stopped_at = level, warned_at, stopped_at

    def load(self, checkpoint: str) -> None:
        """Restore the state saved in a checkpoint folder (from its ``trainer_state.json``, or the
        ``qdc_collapse_detector.json`` of earlier versions). ``train(resume_from_checkpoint=...)`` does this
        by itself; call it before ``train`` to continue another run's detector."""
        trainer_state = os.path.join(checkpoint, "trainer_state.json")
        if os.path.isfile(trainer_state):
            saved = self._saved_state(self._read_json(trainer_state).get("stateful_callbacks"))
            if saved is not None:
                self._load_checked(saved, trainer_state)
                return
        legacy = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(legacy):
            raise FileNotFoundError(
                f"{checkpoint} holds no collapse detector state for {sorted(self.detectors)} (neither in "
                f"trainer_state.json nor in {STATE_FILE})"
            )
        self._load_json(legacy)

    def _load_json(self, path: str) -> None:
        """Restore from a JSON file holding :meth:`state_dict`."""
        self._load_checked(self._read_json(path), path)

    def _load_checked(self, state: Any, path: str) -> None:
        try:
            self.load_state_dict(state)
        except ValueError as err:
            raise ValueError(f"collapse detector state in {path}: {err}") from None
        self._restored = True

    @staticmethod
    def _read_json(path: str) -> dict[str, Any]:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}): truncated or damaged (a run killed while saving?); resume from an "
                "earlier checkpoint"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds {type(data).__name__}, not a JSON object")
        return data
