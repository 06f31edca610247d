"""``grpo_prompts``: GRPO's prompts drawn fresh, never a problem the warm-up trained on or a held-out one."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from qdc_trainer.cli.config import ConfigError, load_config  # noqa: E402
from qdc_trainer.cli.grpo import fresh_problems  # noqa: E402
from qdc_trainer.cli.run import load_splits  # noqa: E402


def _cfg(tmp_path, *flags):
    return load_config(
        "arithmetic/grpo_uniform", ["--output_dir", str(tmp_path / "out"), "--train_size", "300", *flags]
    )


def test_fresh_problems_avoid_the_warmup_and_the_held_out_share(tmp_path):
    cfg = _cfg(tmp_path, "--grpo_prompts", "50")
    splits = load_splits(cfg)
    fresh = fresh_problems(cfg, splits["train"])
    assert fresh.num_rows == 50
    assert not set(fresh["expression"]) & set(splits["train"]["expression"])
    assert not set(fresh["expression"]) & set(splits["validation"]["expression"])
    assert not any(fresh["corrupted"])  # clean problems: the reward is the verifier
    again = fresh_problems(cfg, splits["train"])
    assert again["prompt"] == fresh["prompt"]  # a pure function of the recipe


def test_grpo_prompts_must_not_be_negative(tmp_path):
    with pytest.raises(ConfigError, match="grpo_prompts"):
        _cfg(tmp_path, "--grpo_prompts", "-1")
