"""QDCTrainerMixin with TRL's GRPOTrainer in one process: the prompt sampler, the reward feedback, the rollout
monitor, the detector's RL watch, and what the mixin refuses. (Two processes and resume:
tests/distributed/test_multiprocess_grpo.py.)"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from qdc_trainer import (  # noqa: E402
    CollapseDetectorCallback,
    QDCSampler,
    QDCSamplerConfig,
    QDCTrainerMixin,
    RolloutMonitorCallback,
)
from qdc_trainer.callbacks.series import DEFAULT_RL_WATCH  # noqa: E402
from qdc_trainer.data.prompt_sampler import GroupedPromptSampler  # noqa: E402
from qdc_trainer.grpo import Rollouts, group_outcomes, unsupported_trl  # noqa: E402
from qdc_trainer.metrics.rollout import rollout_measures  # noqa: E402
from qdc_trainer.tasks.arithmetic import (  # noqa: E402
    ArithmeticConfig,
    build_model,
    build_tokenizer,
    extract_answer,
    make_splits,
)


class QDCGRPOTrainer(QDCTrainerMixin, GRPOTrainer):
    pass


def digit_reward(completions, **kwargs):
    return [(sum(ch.isdigit() for ch in c) % 3) / 2 for c in completions]


@pytest.fixture(scope="module")
def setting():
    tokenizer = build_tokenizer()
    prompts = make_splits(ArithmeticConfig(), 16, 2, 2, seed=0)["train"]["prompt"]
    return tokenizer, Dataset.from_dict({"prompt": prompts})


def _args(tmp_path, **overrides):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        log_completions=False,
    )
    return GRPOConfig(**{**defaults, **overrides})


def _grpo_trainer(setting, tmp_path, *, model=None, args=None, **kwargs):
    """A QDCGRPOTrainer on the tiny arithmetic model and prompts, with the digit reward."""
    tokenizer, dataset = setting
    return QDCGRPOTrainer(
        model=model if model is not None else build_model(tokenizer, seed=0),
        args=args if args is not None else _args(tmp_path),
        reward_funcs=[digit_reward],
        train_dataset=dataset,
        processing_class=tokenizer,
        **kwargs,
    )


def test_grpo_trains_with_the_sampler_and_the_rollout_monitor(setting, tmp_path):
    _, dataset = setting
    sampler = QDCSampler(len(dataset), config=QDCSamplerConfig(update_every=1, example_loss_strength=1.0))
    monitor = RolloutMonitorCallback(answer=extract_answer)
    trainer = _grpo_trainer(
        setting,
        tmp_path,
        qdc_sampler=sampler,
        callbacks=[monitor],
    )
    assert monitor.trainer is trainer  # bound by the mixin
    assert not trainer.log_entropy  # TRL logs its own entropy
    trainer.train()
    assert isinstance(trainer._qdc_grouped, GroupedPromptSampler)
    assert trainer._qdc_grouped.prompts_per_generation == 2 and trainer._qdc_grouped.num_generations == 4
    history = trainer.state.log_history
    rollout = [r for r in history if "qdc/rollout/zero_signal_share" in r]
    assert [r["step"] for r in rollout] == [1, 2, 3]
    assert {"qdc/rollout/pass@1", "qdc/rollout/pass@4", "qdc/rollout/distinct_answers"} <= set(rollout[0])
    train = [r for r in history if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]  # the rollout records never replace a training log
    assert all("reward" in r and "qdc/sampler/ess_ratio" in r for r in train)
    assert sampler.num_updates == 3 and sampler.uses_success and sampler.objective == "mixed"
    assert np.isnan(sampler.loss_ema).all()  # GRPO feeds back successes, not losses
    a, b = sampler.success_posterior()
    assert float((a + b).max()) > sampler.config.success_prior + 1e-6  # some prompts have evidence of their own
    assert all("qdc/sampler/predicted_mixed" in r and "qdc/sampler/measured_mixed" in r for r in train)
    assert sampler.consumed == 6  # 3 generation batches of 2 prompts, each finished


def test_rollout_monitor_alone_measures_without_a_sampler(setting, tmp_path):
    trainer = _grpo_trainer(
        setting,
        tmp_path,
        args=_args(tmp_path, max_steps=1),
        callbacks=[RolloutMonitorCallback(success_threshold=None)],
    )
    trainer.train()
    records = [r for r in trainer.state.log_history if "qdc/rollout/zero_signal_share" in r]
    assert len(records) == 1 and "qdc/rollout/pass@1" not in records[0]


def test_the_rollout_monitor_measures_grpo_token_ids_on_request(setting, tmp_path):
    tokenizer, _ = setting

    class Keeping(RolloutMonitorCallback):
        def observe(self, rollouts):
            self.seen.append(rollouts)
            super().observe(rollouts)

    words, tokens = Keeping(), Keeping(tokens=True)
    words.seen, tokens.seen = [], []
    _grpo_trainer(setting, tmp_path, args=_args(tmp_path, max_steps=1), callbacks=[words]).train()
    assert [r.completion_ids for r in words.seen] == [None]  # gathered only when a monitor asks
    _grpo_trainer(setting, tmp_path, args=_args(tmp_path, max_steps=2), callbacks=[tokens]).train()
    assert len(tokens.seen) == 2
    for rollouts in tokens.seen:  # the unpadded ids of each completion, in the records' order
        assert len(rollouts.completion_ids) == len(rollouts.completions) == 8
        decoded = [tokenizer.decode(ids, skip_special_tokens=True) for ids in rollouts.completion_ids]
        assert decoded == rollouts.completions
        assert all(ids.ndim == 1 and ids.dtype.kind == "i" for ids in rollouts.completion_ids)
        by_ids = rollout_measures(rollouts.completion_ids, rollouts.rewards, 4)
        assert tokens._measure(rollouts)["qdc/rollout/per_prompt/distinct_2"] == by_ids["per_prompt/distinct_2"]


def test_ungatherable_token_ids_fall_back_to_words(setting, tmp_path, monkeypatch, caplog):
    import qdc_trainer.grpo as grpo_module

    def broken(trainer, output):
        raise KeyError("completion_mask")

    monkeypatch.setattr(grpo_module, "gather_completion_ids", broken)
    trainer = _grpo_trainer(
        setting, tmp_path, args=_args(tmp_path, max_steps=2), callbacks=[RolloutMonitorCallback(tokens=True)]
    )
    with caplog.at_level(logging.WARNING, logger="qdc_trainer"):
        trainer.train()
    records = [r for r in trainer.state.log_history if "qdc/rollout/per_prompt/distinct_2" in r]
    assert len(records) == 2 and all(0.0 <= r["qdc/rollout/per_prompt/distinct_2"] <= 1.0 for r in records)
    assert sum("could not gather GRPO's completion ids" in m for m in caplog.messages) == 1
    assert sum("got no token ids" in m for m in caplog.messages) == 1


def test_detector_watches_the_rollouts_under_grpo(setting, tmp_path):
    detector = CollapseDetectorCallback(actions=("log",))
    trainer = _grpo_trainer(
        setting,
        tmp_path,
        args=_args(tmp_path, max_steps=2),
        callbacks=[RolloutMonitorCallback(), detector],
    )
    trainer.train()
    assert set(detector.detectors) == set(DEFAULT_RL_WATCH)
    assert any("qdc/collapse/level" in r for r in trainer.state.log_history)
    explicit = CollapseDetectorCallback(watch={"entropy": "decrease"}, actions=("log",)).bind(trainer)
    explicit._fit_to_trainer()
    assert set(explicit.detectors) == {"entropy"}  # a watch the user chose stays


def test_importance_weighting_is_refused_under_grpo(setting, tmp_path):
    _, dataset = setting
    with pytest.raises(ValueError, match="GRPOTrainer"):
        _grpo_trainer(
            setting,
            tmp_path,
            qdc_sampler=QDCSampler(len(dataset)),
            loss_weighting="importance",
        )


@pytest.mark.parametrize("name", ["DPOTrainer", "RewardTrainer", "KTOTrainer", "RLOOTrainer"])
def test_other_trl_trainers_are_refused(name):
    base = getattr(trl, name, None)
    if base is None:
        pytest.skip(f"this TRL has no {name}")

    class Mixed(QDCTrainerMixin, base):
        pass

    assert unsupported_trl(Mixed) == name
    with pytest.raises(TypeError, match=f"does not support TRL's {name}"):
        Mixed(model=None)
    assert unsupported_trl(QDCGRPOTrainer) is None


def test_group_outcomes_refuses_a_group_that_mixes_prompts():
    rollouts = Rollouts(["p"] * 4, ["a"] * 4, np.array([1.0, 0.0, 1.0, 0.0]), 2, np.array([1, 2, 3, 3]), 0)
    with pytest.raises(RuntimeError, match="mixes prompts"):
        group_outcomes(rollouts)
    nan = Rollouts(["p"] * 4, ["a"] * 4, np.array([1.0, np.nan, 1.0, 0.0]), 2, np.array([1, 1, 3, 3]), 0)
    idx, wins, trials, mixed = group_outcomes(nan)
    assert idx.tolist() == [1, 3] and wins.tolist() == [1.0, 1.0] and trials.tolist() == [1.0, 2.0]
    assert mixed.tolist() == [False, True]  # one scored completion is never a mixed group
    graded = Rollouts(["p"] * 2, ["a"] * 2, np.array([3.0, 1.0]), 2, np.array([0, 0]), 0)
    with pytest.raises(ValueError, match="success_threshold"):
        group_outcomes(graded)
    assert group_outcomes(graded, threshold=2.0)[1].tolist() == [1.0]


def test_scale_rewards_chooses_the_objective(setting, tmp_path):
    _, dataset = setting
    for scale, objective in (("group", "mixed"), ("none", "variance"), ("batch", "variance")):
        sampler = QDCSampler(len(dataset))
        _grpo_trainer(setting, tmp_path, args=_args(tmp_path, scale_rewards=scale), qdc_sampler=sampler)
        assert (sampler.group_size, sampler.objective) == (4, objective)


def test_a_failing_measure_logs_nan_and_warns_once(caplog):
    # three rollouts do not split into groups of 2: measuring fails (a failing answer extractor no longer
    # does: its completions count as having no answer, tests/metrics/test_rollout.py)
    monitor = RolloutMonitorCallback(answer=lambda text: 1 / 0)
    rollouts = Rollouts(["p"] * 3, ["a b", "c d", "e f"], np.ones(3), 2, None, 0)
    with caplog.at_level(logging.WARNING, logger="qdc_trainer"):
        monitor.observe(rollouts)
        monitor.observe(rollouts)
        records = monitor.collect()  # the warning comes from the background thread
    assert monitor.failures == 2 and all(np.isnan(r["qdc/rollout/zero_signal_share"]) for r in records)
    assert sum("RolloutMonitorCallback" in m for m in caplog.messages) == 1


def test_the_rollout_monitor_measures_off_the_generation_path(monkeypatch):
    # observe() hands the batch to the background thread and returns; the end of the step waits for it
    import threading

    from qdc_trainer.callbacks import rollout as rollout_module

    release, started = threading.Event(), threading.Event()
    measure = rollout_module.rollout_measures

    def slow(*args, **kwargs):
        started.set()
        assert release.wait(10)
        return measure(*args, **kwargs)

    monkeypatch.setattr(rollout_module, "rollout_measures", slow)
    logged = []
    monitor = RolloutMonitorCallback(trainer=SimpleNamespace(log=logged.append))
    rollouts = Rollouts(["p"] * 4, ["a b", "a c", "d e", "d e"], np.array([1.0, 0.0, 1.0, 1.0]), 2, None, 0)
    monitor.observe(rollouts)
    assert started.wait(10) and monitor.pending == [] and monitor.measured == 1  # observe() did not wait
    release.set()
    monitor.on_step_end(None, None, SimpleNamespace())
    assert len(logged) == 1 and logged[0]["qdc/rollout/per_prompt/distinct_2"] == pytest.approx(0.75)
    monitor.on_train_end(None, None, SimpleNamespace())
    assert monitor._executor is None


def test_the_background_measures_equal_the_synchronous_ones():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    batches = [
        Rollouts(
            ["p"] * 16,
            [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(16)],
            rng.integers(0, 2, 16).astype(float),
            4,
            None,
            step,
        )
        for step in range(3)
    ]
    records = []
    for background in (True, False):
        monitor = RolloutMonitorCallback(answer=lambda t: t.split()[-1], background=background)
        for rollouts in batches:
            monitor.observe(rollouts)
        records.append(monitor.collect())
    assert records[0] == records[1] and len(records[0]) == 3


def test_only_the_main_process_measures_rollouts():
    def monitor_on(main: bool) -> RolloutMonitorCallback:
        accelerator = SimpleNamespace(is_main_process=main, num_processes=1)
        return RolloutMonitorCallback(trainer=SimpleNamespace(accelerator=accelerator, log=lambda logs: None))

    rollouts = Rollouts(["p"] * 2, ["a b", "a c"], np.array([1.0, 0.0]), 2, None, 0)
    main, other = monitor_on(True), monitor_on(False)
    for monitor in (main, other):
        monitor.observe(rollouts)
    assert (main.batches, main.measured, len(main.collect())) == (1, 1, 1)
    assert (other.batches, other.measured, other.collect()) == (1, 0, [])
    with pytest.raises(TypeError, match="background"):
        RolloutMonitorCallback(background="yes")


def test_grpo_scores_left_padded_rows_at_their_own_positions(setting, tmp_path):
    # GRPO left-pads prompts and scores them without position_ids; GPT-2's absolute positions would shift
    import torch

    tokenizer, _ = setting
    model = build_model(tokenizer, seed=0)
    ids = torch.tensor([tokenizer("Compute 2 + 3.\nStep 1: 2 + 3 = 5.").input_ids])
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones_like(ids)], dim=1)
    with torch.no_grad():
        shifted = model(padded, attention_mask=mask).logits[0, 4:]
    assert not torch.allclose(shifted, model(ids).logits[0], atol=1e-3)  # the problem, without the mixin
    _grpo_trainer(
        setting,
        tmp_path,
        model=model,
    )
    with torch.no_grad():
        assert torch.allclose(model(padded, attention_mask=mask).logits[0, 4:], model(ids).logits[0], atol=1e-5)


def test_monitors_alone_never_stop_training_when_the_rollouts_cannot_be_read(setting, tmp_path, monkeypatch, caplog):
    import qdc_trainer.grpo as grpo_module

    def broken(trainer, indices, completion_ids=None):
        raise RuntimeError("this TRL keeps its rollouts elsewhere")

    monkeypatch.setattr(grpo_module, "read_rollouts", broken)
    _, dataset = setting
    trainer = _grpo_trainer(
        setting,
        tmp_path,
        args=_args(tmp_path, max_steps=2),
        callbacks=[RolloutMonitorCallback()],
    )
    with caplog.at_level(logging.WARNING, logger="qdc_trainer"):
        trainer.train()
    assert trainer.state.global_step == 2
    assert sum("could not read GRPO's rollouts" in m for m in caplog.messages) == 1
    sampled = _grpo_trainer(
        setting,
        tmp_path,
        args=_args(tmp_path, max_steps=1),
        qdc_sampler=QDCSampler(len(dataset)),
    )
    with pytest.raises(RuntimeError, match="elsewhere"):  # with a sampler the feedback is not optional
        sampled.train()
