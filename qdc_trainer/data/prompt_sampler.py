"""The layout GRPO needs, over a :class:`~qdc_trainer.data.sampler.QDCSampler`'s prompts.

TRL's ``GRPOTrainer`` generates a group of ``num_generations`` completions for each
prompt and reuses one generation batch for ``steps_per_generation x num_iterations``
micro-steps. Its own sampler (TRL's ``RepeatSampler``) therefore yields each prompt
``num_generations`` times in a row, and each chunk of ``prompts_per_generation``
prompts ``repeat_count`` times (one dataloader batch per micro-step, the same chunk
each time); the trainer generates from the first and trains on the stored
completions for the rest. :class:`GroupedPromptSampler` yields the same layout
over the prompts a ``QDCSampler`` draws, one chunk after another:

>>> from qdc_trainer.data.sampler import QDCSampler
>>> from qdc_trainer.data.weights import QDCSamplerConfig
>>> base = QDCSampler(6, config=QDCSamplerConfig(seed=3), block_size=2)
>>> grouped = GroupedPromptSampler(base, num_generations=2, prompts_per_generation=2, repeat_count=2)
>>> order = list(grouped)
>>> len(order) == len(grouped) == 6 * 2 * 2
True
>>> order[:8] == [order[0]] * 2 + [order[2]] * 2 + [order[0]] * 2 + [order[2]] * 2
True

The chunk is the unit of the weights: the trainer feeds back one signal per prompt
of a chunk when it generates for it (:meth:`~qdc_trainer.data.sampler.QDCSampler.record`
with ``consume=False``), and moves the position on (:meth:`set_position`) as micro-steps
finish, so a checkpoint saved in the middle of a chunk's reuse keeps that chunk for the
resumed run. Every process draws the same indices (the base sampler's stream is a pure
function of its seed, the epoch and the feedback, which every process receives whole).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

from .sampler import QDCSampler

__all__ = ["GroupedPromptSampler"]


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class GroupedPromptSampler(torch.utils.data.Sampler[int]):
    """Each prompt ``num_generations`` times, each chunk of ``prompts_per_generation`` prompts ``repeat_count``
    times, over the prompts ``sampler`` draws (TRL's ``RepeatSampler`` layout; a last, short chunk is dropped).

    Args:
        sampler: the :class:`QDCSampler` over the prompts.
        num_generations: completions per prompt (GRPO's ``num_generations``).
        prompts_per_generation: distinct prompts per generation batch
            (``generation_batch_size // num_generations``).
        repeat_count: micro-steps that reuse one generation batch
            (``steps_per_generation * num_iterations``).
    """

    def __init__(
        self, sampler: QDCSampler, *, num_generations: int, prompts_per_generation: int, repeat_count: int = 1
    ) -> None:
        if not isinstance(sampler, QDCSampler):
            raise TypeError(f"sampler must be a QDCSampler, got {type(sampler).__name__}")
        self.sampler = sampler
        self.num_generations = _positive("num_generations", num_generations)
        self.prompts_per_generation = _positive("prompts_per_generation", prompts_per_generation)
        self.repeat_count = _positive("repeat_count", repeat_count)
        if len(sampler) < self.prompts_per_generation:
            raise ValueError(
                f"the sampler draws {len(sampler)} prompts per epoch, fewer than one generation batch's "
                f"{self.prompts_per_generation} distinct prompts"
            )

    @property
    def chunks_per_epoch(self) -> int:
        """Generation batches per epoch."""
        return len(self.sampler) // self.prompts_per_generation

    def __len__(self) -> int:
        return self.chunks_per_epoch * self.prompts_per_generation * self.num_generations * self.repeat_count

    def __iter__(self) -> Iterator[int]:
        prompts = iter(self.sampler)
        for _ in range(self.chunks_per_epoch):
            chunk = list(itertools.islice(prompts, self.prompts_per_generation))
            for _ in range(self.repeat_count):
                for index in chunk:
                    yield from itertools.repeat(index, self.num_generations)

    def set_position(self, micro_steps: int) -> None:
        """Tell the base sampler how far this epoch has trained: ``micro_steps`` dataloader batches (one per
        micro-step). Chunks whose every reuse is done count as consumed; the chunk in progress stays open, so a
        checkpoint keeps its prompts for the resumed run."""
        if isinstance(micro_steps, bool) or not isinstance(micro_steps, int) or micro_steps < 0:
            raise ValueError(f"micro_steps must be an int >= 0, got {micro_steps!r}")
        done = min(micro_steps // self.repeat_count, self.chunks_per_epoch)
        self.sampler.consumed = done * self.prompts_per_generation
