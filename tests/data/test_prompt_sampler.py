"""GroupedPromptSampler: TRL's RepeatSampler layout over a QDCSampler's prompts, and its position."""

import numpy as np
import pytest

from qdc_trainer import QDCSampler, QDCSamplerConfig
from qdc_trainer.data.prompt_sampler import GroupedPromptSampler


def _base(n=12, **config):
    return QDCSampler(n, quality=np.linspace(0, 1, n), config=QDCSamplerConfig(seed=7, **config), block_size=4)


@pytest.mark.parametrize("k,chunk,repeat", [(2, 4, 1), (3, 2, 4), (1, 3, 2), (4, 4, 3)])
def test_layout_is_trl_repeat_sampler_applied_to_the_drawn_prompts(k, chunk, repeat):
    from trl.trainer.grpo_trainer import RepeatSampler

    base = _base()
    stream = list(base)  # the prompts the base draws (a pure function of its state: drawing again repeats it)
    grouped = GroupedPromptSampler(base, num_generations=k, prompts_per_generation=chunk, repeat_count=repeat)
    # TRL's sampler over positions 0..n-1 without shuffling gives the layout; map it through our stream
    layout = RepeatSampler(range(len(stream)), k, batch_size=chunk, repeat_count=repeat, shuffle=False)
    assert list(grouped) == [stream[i] for i in layout]
    assert len(grouped) == len(layout)


def test_position_counts_only_finished_chunks():
    base = _base()
    grouped = GroupedPromptSampler(base, num_generations=2, prompts_per_generation=4, repeat_count=4)
    grouped.set_position(3)  # 3 of the first chunk's 4 micro-steps: still open
    assert base.consumed == 0
    grouped.set_position(4)
    assert base.consumed == 4
    grouped.set_position(11)
    assert base.consumed == 8
    grouped.set_position(1000)  # never past the epoch
    assert base.consumed == 12
    with pytest.raises(ValueError, match="micro_steps"):
        grouped.set_position(-1)


def test_record_without_consuming_keeps_the_position():
    base = _base(update_every=1)
    base.record([0, 1], [0.5, 0.0], consume=False)
    assert base.consumed == 0 and base.update()
    assert np.isfinite(base.loss_ema[[0, 1]]).all()


def test_an_open_chunk_is_replayed_after_a_checkpoint():
    # a checkpoint in the middle of a chunk's reuse: the resumed sampler yields that chunk's prompts again
    base = _base(update_every=1)
    grouped = GroupedPromptSampler(base, num_generations=2, prompts_per_generation=4, repeat_count=2)
    it = iter(grouped)
    first = [next(it) for _ in range(8 + 8 + 4)]  # chunk 0 twice, and half of chunk 1's first repeat
    base.record(first[:8:2], [0.1, 0.2, 0.3, 0.4], consume=False)  # chunk 0's feedback
    base.record(first[16:20:2] + [first[16]] * 2, [0.9, 0.9, 0.9, 0.9], consume=False)
    base.update()
    grouped.set_position(3)  # chunk 0 done (2 micro-steps), chunk 1 at its second micro-step
    state = base.state_dict()
    rest = [next(it) for _ in range(12)]  # the uninterrupted sampler: the rest of chunk 1 (both repeats)
    restored = _base(update_every=1)
    restored.load_state_dict(state)
    resumed = list(GroupedPromptSampler(restored, num_generations=2, prompts_per_generation=4, repeat_count=2))
    # the Trainer skips the first 3 micro-steps (3 x 8 positions) and trains on the rest: chunk 1 must be whole
    assert resumed[16:32] == first[16:20] + rest
    assert len(resumed) == len(grouped)


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="QDCSampler"):
        GroupedPromptSampler(list(range(4)), num_generations=2, prompts_per_generation=2)
    with pytest.raises(ValueError, match="num_generations"):
        GroupedPromptSampler(_base(), num_generations=0, prompts_per_generation=2)
    with pytest.raises(ValueError, match="fewer than one generation batch"):
        GroupedPromptSampler(_base(4), num_generations=2, prompts_per_generation=8)
