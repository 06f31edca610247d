"""The prompt sampler aims GRPO at the policy's frontier, with a real ``GRPOTrainer`` and its default settings.

The reward depends on the prompt's complexity alone: level 1 is always solved, level 2 half the time (a
coin per completion), level 3 never. The pool holds 5x the prompts the run draws, so most draws are first
visits, and the clusters (5 phrasings) say nothing about difficulty. With GRPO's own uniform prompts about
2/3 + 1/3 * 2/2^4 = 0.71 of the groups carry no signal; the sampler, built as a user would
(``QDCSampler(n, complexity=..., clusters=...)``), learns the levels' pass rates from the groups it sees and
carries them to unseen prompts of the same level.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

trl = pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from qdc_trainer import QDCSampler, QDCTrainerMixin  # noqa: E402
from qdc_trainer.tasks.arithmetic import build_model, build_tokenizer  # noqa: E402

pytestmark = pytest.mark.slow

POOL = 320  # prompts; the run draws 64 of them (16 generation batches of 4)
STEPS = 16
PROMPTS = 4
GROUP = 4


class QDCGRPOTrainer(QDCTrainerMixin, GRPOTrainer):
    pass


def level_of(prompt: str) -> int:
    return int(prompt.split("level ")[1].split(":")[0])


def level_reward(prompts, completions, **kwargs):
    """1 at level 1, a fair coin per completion at level 2 (its text's hash), 0 at level 3."""
    out = []
    for prompt, completion in zip(prompts, completions):
        level = level_of(prompt)
        coin = hashlib.sha256(f"{prompt}|{completion}".encode()).digest()[0] % 2
        out.append(1.0 if level == 1 else 0.0 if level == 3 else float(coin))
    return out


def _run(tmp_path, sampler: QDCSampler | None, levels: np.ndarray, prompts: list[str]) -> list[dict]:
    tokenizer = build_tokenizer()
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=PROMPTS * GROUP,
        num_generations=GROUP,
        max_completion_length=6,
        temperature=1.0,
        max_steps=STEPS,
        logging_steps=1,
        learning_rate=1e-5,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        log_completions=False,
    )
    trainer = QDCGRPOTrainer(
        model=build_model(tokenizer, seed=0),
        args=args,
        reward_funcs=[level_reward],
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        qdc_sampler=sampler,
    )
    trainer.train()
    return [r for r in trainer.state.log_history if "frac_reward_zero_std" in r]


def test_the_sampler_at_its_defaults_cuts_the_groups_without_signal(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.integers(1, 4, size=POOL)
    phrasing = rng.integers(0, 5, size=POOL)  # clusters that carry no difficulty
    prompts = [f"task {i} level {lv}: phrasing {ph}" for i, (lv, ph) in enumerate(zip(levels, phrasing))]
    uniform = _run(tmp_path / "uniform", None, levels, prompts)
    sampler = QDCSampler(POOL, complexity=levels.astype(float), clusters=phrasing)
    qdc = _run(tmp_path / "qdc", sampler, levels, prompts)
    zero_uniform = float(np.mean([r["frac_reward_zero_std"] for r in uniform]))
    # the weights are refreshed after every generation batch; the first batches are drawn before any feedback
    zero_qdc = float(np.mean([r["frac_reward_zero_std"] for r in qdc if r["step"] > 3]))
    assert zero_uniform > 0.5
    assert zero_qdc < 0.7 * zero_uniform, (zero_qdc, zero_uniform)  # the claim (a), on one run
    # the pooled estimates carry the levels' pass rates to prompts never drawn
    a, b = sampler.success_posterior()
    rate = a / (a + b)
    by_level = [float(rate[levels == lv].mean()) for lv in (1, 2, 3)]
    assert by_level[0] > 0.7 and 0.3 < by_level[1] < 0.7 and by_level[2] < 0.3
    shares = [sampler.probabilities()[levels == lv].sum() for lv in (1, 2, 3)]
    assert shares[1] > 0.5  # the frontier level gets most of the draws
