"""Collapse signals on one logged scalar series: the pure core of the collapse detector.

A :class:`SeriesDetector` watches one series (for example ``qdc/gen/distinct_2``
or TRL's ``entropy``) in which one direction is bad: a drop for diversity, a rise
for self-BLEU or repetition. From the first ``warmup`` finite observations it
takes a baseline; after that each observation updates an exponential moving
average (EMA) and three signals, all signed so that positive means worse:

- ``change``: ``(EMA - baseline) / max(|baseline|, min_scale)`` (or the plain
  difference with ``relative=False``);
- ``slope``: the least-squares slope of the last ``slope_window`` EMA values per
  observation, on the same scale;
- ``streak``: how many observations in a row moved the EMA the bad way.

Level 2 (collapse) when ``change >= collapse_change``; level 1 (warning) when
``change >= warn_change``, or when ``streak >= patience`` and
``slope >= warn_slope``; else 0. NaN and inf values are skipped and counted,
never averaged in. No published threshold exists for any of this: the defaults
are starting points to calibrate on runs with planted and without collapse.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["CollapseSignal", "SeriesDetector"]

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
    warmup: int = field(default=3, metadata={"help": "finite observations averaged into the baseline"})
    ema: float = field(default=0.5, metadata={"help": "weight of a new observation in the EMA (1 = no smoothing)"})
    warn_change: float = field(default=0.15, metadata={"help": "relative worsening that warns"})
    collapse_change: float = field(default=0.35, metadata={"help": "relative worsening that declares collapse"})
    patience: int = field(default=3, metadata={"help": "observations in a row that worsen before the slope can warn"})
    slope_window: int = field(default=4, metadata={"help": "EMA values in the slope fit"})
    warn_slope: float = field(default=0.03, metadata={"help": "worsening per observation that warns after patience"})
    relative: bool = field(default=True, metadata={"help": "scale by the baseline (False: plain differences)"})
    min_scale: float = field(default=1e-3, metadata={"help": "smallest |baseline| used as the relative scale"})

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("key must be the non-empty name of a logged series")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction={self.direction!r} for {self.key!r} must be one of {DIRECTIONS}")
        for name in ("warmup", "patience", "slope_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "slope_window" else 1):
                raise ValueError(f"{name}={value!r} for {self.key!r} must be an int >= {2 if name == 'slope_window' else 1}")
        if not 0 < self.ema <= 1:
            raise ValueError(f"ema={self.ema!r} for {self.key!r} must be in (0, 1]")
        if not 0 < self.warn_change <= self.collapse_change:
            raise ValueError(f"need 0 < warn_change <= collapse_change for {self.key!r}")
        if self.warn_slope <= 0 or self.min_scale <= 0:
            raise ValueError(f"warn_slope and min_scale for {self.key!r} must be > 0")
        self.reset()

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
        if change >= self.collapse_change:
            level, reason = 2, f"changed {change:+.1%} from baseline (collapse at {self.collapse_change:.0%})"
        elif change >= self.warn_change:
            level, reason = 1, f"changed {change:+.1%} from baseline (warning at {self.warn_change:.0%})"
        elif self.streak >= self.patience and slope >= self.warn_slope:
            level, reason = 1, f"worsened {self.streak} times in a row, {slope:+.1%} per observation"
        else:
            level, reason = 0, "healthy"
        if level >= 1 and self.first_warning_step is None:
            self.first_warning_step = step
        if level == 2 and self.first_collapse_step is None:
            self.first_collapse_step = step
        self.signal = CollapseSignal(self.key, level, step, x, self.smoothed, self.baseline, change, slope, self.streak, reason)
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
        """Restore :meth:`state_dict`; the configuration must be the same."""
        if state["config"] != asdict(self):
            raise ValueError(f"saved detector for {state['config'].get('key')!r} was configured differently")
        self._warmup_values = list(state["warmup_values"])
        self.baseline, self.smoothed = state["baseline"], state["smoothed"]
        self._recent = list(state["recent"])
        self.streak, self.skipped = state["streak"], state["skipped"]
        self.first_warning_step, self.first_collapse_step = state["first_warning_step"], state["first_collapse_step"]
        self.signal = CollapseSignal(**state["signal"])
