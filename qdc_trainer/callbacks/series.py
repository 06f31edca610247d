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

The level (a :class:`CollapseLevel`, an int) is 2, ``COLLAPSE``, when ``change >= collapse_change``;
1, ``WARNING``, when ``change >= warn_change``, or (only when ``patience`` is set) when
``streak >= patience`` and ``slope >= warn_slope``; else 0, ``HEALTHY``. NaN and inf values
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

import math
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np
from transformers.utils import logging

__all__ = [
    "DEFAULT_RL_WATCH",
    "DEFAULT_WATCH",
    "KNOWN_SERIES",
    "CollapseLevel",
    "CollapseSignal",
    "SeriesDetector",
    "series_name",
    "watch_from_keys",
]

logger = logging.get_logger(__name__)

DIRECTIONS = ("decrease", "increase")


class CollapseLevel(IntEnum):
    """How bad a watched series looks: an ``int`` (0, 1, 2) that compares, sorts, formats and serialises as one.

    >>> CollapseLevel.WARNING == 1, max(CollapseLevel.HEALTHY, CollapseLevel.COLLAPSE), float(CollapseLevel.WARNING)
    (True, <CollapseLevel.COLLAPSE: 2>, 1.0)
    >>> import json; json.dumps({"level": CollapseLevel.COLLAPSE}), f"{CollapseLevel.WARNING}"
    ('{"level": 2}', '1')
    """

    HEALTHY = 0
    """Healthy, or not enough observations yet."""
    WARNING = 1
    """The series moved the bad way past the warning threshold (or kept worsening, with the slope rule)."""
    COLLAPSE = 2
    """The series moved the bad way past the collapse threshold."""

    @classmethod
    def parse(cls, value: Any, what: str = "level") -> CollapseLevel:
        """``value`` (a level or the int 0, 1 or 2, as saved) as a :class:`CollapseLevel`; ``ValueError`` otherwise.

        >>> CollapseLevel.parse(2)
        <CollapseLevel.COLLAPSE: 2>
        """
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value not in (0, 1, 2):
            raise ValueError(f"{what}: {value!r} is not a collapse level (0 healthy, 1 warning, 2 collapse)")
        return cls(int(value))


@dataclass(frozen=True)
class CollapseSignal:
    """What a :class:`SeriesDetector` concluded from the observations so far."""

    key: str
    level: CollapseLevel  # HEALTHY (also: not enough data), WARNING or COLLAPSE; an int 0, 1, 2 is converted
    step: int | None
    value: float | None  # the last finite observation
    smoothed: float | None
    baseline: float | None
    change: float = 0.0
    slope: float = 0.0
    streak: int = 0
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", CollapseLevel.parse(self.level, f"level of the {self.key!r} signal"))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (the level as an int)."""
        return {**asdict(self), "level": int(self.level)}


@dataclass
class SeriesDetector:
    """Watch one scalar series for drift in its bad direction.

    >>> d = SeriesDetector("qdc/gen/distinct_2", warmup=2, ema=1.0)
    >>> [int(d.update(step, v).level) for step, v in enumerate([0.8, 0.8, 0.75, 0.6, 0.4])]
    [0, 0, 0, 1, 2]
    >>> d.signal.level
    <CollapseLevel.COLLAPSE: 2>
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
        >>> [int(d.update(step, v).level) for step, v in enumerate([0.8, 0.68, 0.62, 0.4])]
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
        self.signal = CollapseSignal(self.key, CollapseLevel.HEALTHY, None, None, None, None, reason="warming up")

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
                self.signal = CollapseSignal(self.key, CollapseLevel.HEALTHY, step, x, None, None, reason="warming up")
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
            self.signal = CollapseSignal(
                self.key, CollapseLevel.HEALTHY, step, x, self.smoothed, self.baseline, reason="baseline set"
            )
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
                CollapseLevel.COLLAPSE,
                f"{self._moved(change)} from baseline {self.baseline:.3g} "
                f"(collapse at {self._amount(collapse_change)})",
            )
        elif change >= warn_change:
            level, reason = (
                CollapseLevel.WARNING,
                f"{self._moved(change)} from baseline {self.baseline:.3g} (warning at {self._amount(warn_change)})",
            )
        elif self.patience is not None and self.streak >= self.patience and slope >= self.warn_slope:
            per = " of the baseline" if self.relative else ""
            level, reason = (
                CollapseLevel.WARNING,
                f"worsened {self.streak} times in a row: {self._moved(slope)}{per} per observation",
            )
        else:
            level, reason = CollapseLevel.HEALTHY, "healthy"
        if level >= CollapseLevel.WARNING and self.first_warning_step is None:
            self.first_warning_step = step
        if level == CollapseLevel.COLLAPSE and self.first_collapse_step is None:
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
            "signal": self.signal.to_dict(),
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
        except TypeError as err:  # wrong types, or unknown / missing signal fields (a bad level: ValueError)
            raise ValueError(f"saved detector state for {self.key!r} is malformed: {err}") from None
        if (baseline is None) != (smoothed is None) or len(warmup_values) > self.warmup:
            raise ValueError(f"saved detector state for {self.key!r} is inconsistent (baseline, EMA or warm-up)")
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

DEFAULT_RL_WATCH: dict[str, dict[str, Any]] = {
    # GRPO's rollouts (qdc_trainer.callbacks.rollout), logged every step from a few prompts: the baseline is the mean
    # of the first 5 observations and a new one weighs 0.2. Calibrated in benchmarks/calibrate_rl_collapse.py.
    "qdc/rollout/across_prompt/distinct_2": dict(
        direction="decrease", relative=False, warmup=5, ema=0.2, warn_change=0.1, collapse_change=0.25
    ),
    "qdc/rollout/across_prompt/self_bleu": dict(
        direction="increase", relative=False, warmup=5, ema=0.2, warn_change=0.1, collapse_change=0.25
    ),
}
"""What a default :class:`CollapseDetectorCallback` watches under TRL's ``GRPOTrainer``, with the calibrated
settings."""

KNOWN_SERIES: dict[str, dict[str, Any]] = {
    **DEFAULT_WATCH,
    **DEFAULT_RL_WATCH,
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


def _default_rl_watch() -> list[SeriesDetector]:
    return [SeriesDetector(key, **settings) for key, settings in DEFAULT_RL_WATCH.items()]


def watch_from_keys(keys: list[str]) -> list[SeriesDetector]:
    """Detectors for ``"key"`` (a series of :data:`KNOWN_SERIES`, with its calibrated settings) or
    ``"key:decrease"`` / ``"key:increase"`` (any logged series, default thresholds).

    For a task with one right answer per prompt (arithmetic, code), per-input diversity and
    entropy fall as the model learns; watch the across-input series there.

    >>> watched = watch_from_keys(["qdc/gen/across_input/self_bleu", "entropy:decrease"])
    >>> [(d.key, d.direction, d.relative) for d in watched]
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
