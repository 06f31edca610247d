"""The Trainer callback of the collapse detector: watch logged series, warn, checkpoint, stop.

:class:`CollapseDetectorCallback` feeds each logged value of a watched series to its
:class:`~qdc_trainer.callbacks.series.SeriesDetector` (the pure per-series detector, in
:mod:`qdc_trainer.callbacks.series`), agrees on the highest level over all processes
(:func:`~qdc_trainer.callbacks.agreement.agree_max`) and acts on it. Its state travels in the checkpoints.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ._logging import log_record
from .agreement import agree_max
from .series import (  # noqa: F401  (also importable from here, as before the split)
    DEFAULT_RL_WATCH,
    DEFAULT_WATCH,
    DIRECTIONS,
    KNOWN_SERIES,
    CollapseLevel,
    CollapseSignal,
    SeriesDetector,
    _default_rl_watch,
    _default_watch,
    _step_or_none,
    series_name,
    watch_from_keys,
)

__all__ = [
    "CollapseDetectorCallback",
    "CollapseLevel",
    "CollapseSignal",
    "DEFAULT_WATCH",
    "KNOWN_SERIES",
    "SeriesDetector",
    "series_name",
    "watch_from_keys",
]

logger = logging.get_logger(__name__)

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
        self._default_watch = watch is None
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
        self._fit_to_trainer()
        self._fit_to_monitor()
        self._start_run(args, state)
        return control

    def _fit_to_trainer(self) -> None:
        """Under TRL's ``GRPOTrainer`` a detector built with the default watch watches :data:`DEFAULT_RL_WATCH`
        (across-prompt diversity of the rollouts) instead of the generation monitor's series."""
        from ..grpo import is_grpo_trainer

        if self._default_watch and self.trainer is not None and is_grpo_trainer(self.trainer):
            if set(self.detectors) != set(DEFAULT_RL_WATCH):
                self.detectors = {d.key: d for d in _default_rl_watch()}
                self.reset()

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
        self.level = CollapseLevel.HEALTHY
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
            name = "collapse" if level == CollapseLevel.COLLAPSE else "collapse warning"
            logger.warning(
                f"qdc {name} at step {step}: {worst.key} {worst.reason}; now {worst.smoothed:.4g} "
                f"(moving average), last value {worst.value:.4g}"
            )
        if level >= CollapseLevel.WARNING and self.warned_at is None:
            self.warned_at = step
            if "checkpoint" in self.actions:
                control.should_save = True
        if level == CollapseLevel.COLLAPSE and "stop" in self.actions and self.stopped_at is None:
            self.stopped_at = step
            control.should_training_stop = True
        self.level = max(self.level, level)
        self._export(state)
        return control

    # ------------------------------------------------------------------ helpers

    def _agree(self, level: int, args: Any = None) -> CollapseLevel:
        """The highest level over all processes, so that every rank takes the same decision: through the bound
        trainer's accelerator, or ``torch.distributed`` on the device of ``args`` without a trainer."""
        accelerator = getattr(self.trainer, "accelerator", None)
        device = getattr(args if args is not None else getattr(self.trainer, "args", None), "device", None)
        return CollapseLevel(agree_max(int(level), accelerator, device=device))

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
            "level": int(self.level),
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
        level = CollapseLevel.parse(level, "saved collapse level")
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
