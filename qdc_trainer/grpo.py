"""What :class:`~qdc_trainer.QDCTrainerMixin` does differently under TRL's ``GRPOTrainer``.

``class QDCGRPOTrainer(QDCTrainerMixin, GRPOTrainer)`` is all a user writes. Then:

- the prompts come from the :class:`~qdc_trainer.QDCSampler` in GRPO's layout
  (:class:`~qdc_trainer.data.prompt_sampler.GroupedPromptSampler`): each prompt
  ``num_generations`` times, each generation batch reused for
  ``steps_per_generation x num_iterations`` micro-steps, identical on every process;
- the online signal is a prompt's *success* instead of an example's loss: after each
  generation the trainer reads the rewards GRPO computed (all processes' rollouts,
  gathered by TRL) and records, for each prompt, the successes of its group
  (:func:`group_outcomes`). The sampler pools them into a pass-rate posterior per
  prompt, shrunk towards the prompt's difficulty cell (complexity level x cluster) and
  the run, and weights each prompt by what its group is expected to teach: the chance
  that the group is mixed under ``scale_rewards="group"``, the reward variance under
  ``"none"``/``"batch"`` (:func:`objective_of`; :mod:`qdc_trainer.data.success`). A prompt
  the policy always or never solves teaches nothing (its advantages are 0: the
  observation behind DAPO's dynamic sampling, Yu et al. 2025, arXiv 2503.14476) and
  keeps only the floor; unseen prompts borrow their cell's estimate. The complexity term
  aims at the frontier (the level whose pass rate is nearest 1/2) instead of pushing
  upwards; quality, cluster balance and ``tradeoff`` are the SFT ones
  (:mod:`qdc_trainer.data.weights`);
- a :class:`~qdc_trainer.callbacks.rollout.RolloutMonitorCallback` in the trainer's
  callbacks receives the same rollouts and logs their diversity and coverage, with no
  extra generation;
- the loss is GRPO's own: no loss tap, no ``qdc/train/entropy`` (TRL logs ``entropy``),
  and ``loss_weighting`` must stay ``"none"``;
- the model gets position ids from its attention mask whenever a forward passes none
  (:func:`add_mask_positions`). GRPO left-pads the prompts of a batch and scores the
  sequences without ``position_ids``; a model with absolute position embeddings (GPT-2,
  OPT, ...) then scores every padded row at positions shifted by its padding, while it
  sampled them at the right ones (``generate`` derives positions from the mask). On the
  arithmetic task's GPT-2 five pads moved a solution's log-probability by 20 nats, and
  GRPO trained on those scores made the model worse. TRL fixed the same for its online
  DPO trainers (huggingface/trl#6819); rotary models are unaffected either way.

This module reads two things from TRL's ``GRPOTrainer`` (TRL 1.x) that are not public API: the
rollout records ``_logs`` (prompts, completions and per-function rewards of the last generation
batch, gathered from all processes, in the sampler's order) and ``reward_weights``;
``tests/test_grpo.py`` checks that contract on the installed TRL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Rollouts",
    "add_mask_positions",
    "completion_text",
    "gather_completion_ids",
    "group_outcomes",
    "is_grpo_trainer",
    "objective_of",
    "read_rollouts",
    "unsupported_trl",
]

SUPPORTED_TRL = ("SFTTrainer", "GRPOTrainer")
"""TRL trainers the mixin supports; any other TRL trainer (DPO, KTO, RLOO, reward modelling, ...) is refused:
their batches are pairs or their losses are not one per example, so neither the loss feedback nor the
reward feedback applies."""


@dataclass(frozen=True)
class Rollouts:
    """One generation batch of GRPO, all processes': ``num_generations`` consecutive completions per prompt.

    Attributes:
        prompts: the prompts, one per completion (as the dataset gave them).
        completions: the completions' text.
        rewards: the combined reward of each completion (the weighted sum over reward functions, as GRPO
            uses it; NaN where no function scored it).
        num_generations: completions per prompt (k).
        indices: the dataset index of each completion's prompt (None without a QDC sampler).
        step: the optimizer step being trained when they were generated.
        completion_ids: each completion's token ids (GRPO's ``completion_ids`` without their padding, all
            processes'), when a monitor asked for them (``RolloutMonitorCallback(tokens=True)``); else None.
    """

    prompts: list[Any]
    completions: list[str]
    rewards: np.ndarray
    num_generations: int
    indices: np.ndarray | None
    step: int
    completion_ids: list[np.ndarray] | None = None


def _trl_trainer_names(cls: type) -> list[str]:
    return [c.__name__ for c in cls.__mro__ if c.__module__.split(".")[0] == "trl"]


def unsupported_trl(cls: type) -> str | None:
    """The name of a TRL trainer in ``cls``'s bases that the mixin does not support, or None."""
    names = _trl_trainer_names(cls)
    if any(name in SUPPORTED_TRL for name in names):
        return None
    return next((name for name in names if name.endswith("Trainer")), None)


def is_grpo_trainer(trainer: Any) -> bool:
    """Whether ``trainer`` is (a subclass of) TRL's ``GRPOTrainer``."""
    return "GRPOTrainer" in _trl_trainer_names(type(trainer))


def add_mask_positions(model: Any) -> None:
    """Make ``model``'s forward derive ``position_ids`` from ``attention_mask`` when it is called without them
    (``cumsum(mask) - 1``, as ``generate`` does; only the last ``input_ids.shape[1]`` positions when a cache
    holds the rest). A no-op for a model whose forward takes no ``position_ids``; added once.

    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=1, n_head=2)).eval()
    >>> add_mask_positions(model)
    >>> ids, padded = torch.tensor([[5, 6, 7]]), torch.tensor([[0, 0, 5, 6, 7]])
    >>> plain = model(ids).logits[0]
    >>> left = model(padded, attention_mask=torch.tensor([[0, 0, 1, 1, 1]])).logits[0, 2:]
    >>> bool(torch.allclose(plain, left, atol=1e-5))
    True
    """
    import inspect

    if getattr(model, "_qdc_mask_positions", False):
        return
    try:
        accepts = "position_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        accepts = False
    if not accepts:
        return

    def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        mask = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is not None or mask is None or mask.dim() != 2:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        length = ids.shape[1] if ids is not None else embeds.shape[1] if embeds is not None else mask.shape[1]
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
        return args, {**kwargs, "position_ids": positions}

    model.register_forward_pre_hook(hook, with_kwargs=True)
    model._qdc_mask_positions = True


def completion_text(completion: Any) -> str:
    """A completion as text: a string as it is; a conversation (a list of ``{"role", "content"}`` messages)
    as its messages' text contents joined by newlines.

    >>> completion_text([{"role": "assistant", "content": "Answer: 4"}])
    'Answer: 4'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        parts = []
        for message in completion:
            content = message.get("content", "") if isinstance(message, Mapping) else message
            if isinstance(content, list):  # multimodal content blocks
                content = " ".join(str(b.get("text", "")) for b in content if isinstance(b, Mapping))
            parts.append(str(content))
        return "\n".join(parts)
    return str(completion)


def read_rollouts(trainer: Any, indices: np.ndarray | None, completion_ids: list[np.ndarray] | None = None) -> Rollouts:
    """The rollouts of the generation batch ``trainer`` (a ``GRPOTrainer``) has just scored, from its records
    (and ``completion_ids``: :func:`gather_completion_ids` of the batch, or None)."""
    logs = trainer._logs
    prompts, completions = list(logs["prompt"]), [completion_text(c) for c in logs["completion"]]
    names = list(getattr(trainer, "reward_func_names", logs["rewards"].keys()))
    per_func = np.array([list(logs["rewards"][name]) for name in names], dtype=np.float64).reshape(len(names), -1)
    weights = np.asarray(trainer.reward_weights.detach().cpu().float(), dtype=np.float64).reshape(-1, 1)
    scored = ~np.isnan(per_func)
    rewards = np.where(scored, per_func * weights, 0.0).sum(axis=0)
    rewards[~scored.any(axis=0)] = np.nan
    if not (len(prompts) == len(completions) == rewards.shape[0]):
        raise RuntimeError(
            f"GRPOTrainer's rollout records disagree ({len(prompts)} prompts, {len(completions)} completions, "
            f"{rewards.shape[0]} rewards): this TRL version keeps them differently"
        )
    if indices is not None and len(indices) != len(completions):
        raise RuntimeError(f"{len(indices)} prompt indices for {len(completions)} rollouts")
    if completion_ids is not None and len(completion_ids) != len(completions):
        raise RuntimeError(f"{len(completion_ids)} token-id completions for {len(completions)} rollouts")
    return Rollouts(
        prompts=prompts,
        completions=completions,
        rewards=rewards,
        num_generations=int(trainer.num_generations),
        indices=indices,
        step=int(trainer.state.global_step),
        completion_ids=completion_ids,
    )


def gather_completion_ids(trainer: Any, output: Mapping[str, Any]) -> list[np.ndarray]:
    """Every process's completions of a generation batch as token ids, in the order of the rollout records:
    GRPO's ``completion_ids`` where its ``completion_mask`` is set (the padding dropped), gathered over processes
    in rank order, as TRL gathers the completions' text. A collective call: every process makes it."""
    ids, mask = output["completion_ids"], output["completion_mask"]
    accelerator = trainer.accelerator
    if accelerator.num_processes > 1:
        ids = accelerator.gather(accelerator.pad_across_processes(ids, dim=1, pad_index=0))
        mask = accelerator.gather(accelerator.pad_across_processes(mask, dim=1, pad_index=0))
    ids, mask = ids.detach().cpu().numpy(), mask.detach().cpu().numpy().astype(bool)
    return [row[keep] for row, keep in zip(ids, mask)]


def objective_of(args: Any) -> str:
    """What a group is worth under ``args.scale_rewards`` (TRL's ``GRPOConfig``): ``"mixed"`` for ``"group"`` (TRL's
    default: every mixed group's advantages are scaled to unit variance), ``"variance"`` for ``"none"`` and
    ``"batch"`` (advantages keep the group's spread).

    >>> from types import SimpleNamespace
    >>> objective_of(SimpleNamespace(scale_rewards="group")), objective_of(SimpleNamespace(scale_rewards=False))
    ('mixed', 'variance')
    """
    scale = getattr(args, "scale_rewards", "group")
    scale = {True: "group", False: "none"}.get(scale, scale)
    return "mixed" if scale == "group" else "variance"


def group_outcomes(
    rollouts: Rollouts, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prompt index, successes, scored completions, mixed) per group: the sampler's online signal
    (:func:`qdc_trainer.data.success.group_outcomes` on the rollouts' combined rewards).

    >>> r = Rollouts(["p"] * 4, ["a"] * 4, np.array([1.0, 0.0, 1.0, 1.0]), 2, np.array([7, 7, 3, 3]), 0)
    >>> [x.tolist() for x in group_outcomes(r)]
    [[7, 3], [1.0, 2.0], [2.0, 2.0], [True, False]]
    """
    from .data.success import group_outcomes as outcomes

    if rollouts.indices is None:
        raise ValueError("the rollouts carry no prompt indices")
    k = rollouts.num_generations
    idx = np.asarray(rollouts.indices, dtype=np.int64).reshape(-1, k)
    if (idx != idx[:, :1]).any():
        raise RuntimeError("a group of rollouts mixes prompts: the generation batch is not in GRPO's layout")
    wins, trials, mixed = outcomes(rollouts.rewards, k, threshold)
    return idx[:, 0], wins, trials, mixed
