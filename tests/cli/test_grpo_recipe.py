"""The GRPO recipe (trainer: grpo): its configuration, the shared warm-up, and a smoke run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from qdc_trainer.cli.config import ConfigError, load_config  # noqa: E402
from qdc_trainer.cli.grpo import SFT_MARKER, verifier_reward, warm_up  # noqa: E402
from qdc_trainer.cli.main import main  # noqa: E402
from qdc_trainer.cli.recipes import RECIPES_DIR  # noqa: E402
from qdc_trainer.cli.run import load_model_and_tokenizer, load_splits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
RECIPE = RECIPES_DIR / "arithmetic" / "grpo_qdc.yaml"


def test_the_recipes_parse_and_smoke_keeps_grpo_batches_consistent(tmp_path):
    cfg = load_config(RECIPE, ["--output_dir", str(tmp_path)])
    assert cfg.qdc.trainer == "grpo" and type(cfg.training).__name__ == "GRPOConfig"
    assert cfg.grpo.sft_steps == 800 and cfg.training.num_generations == 8 and cfg.qdc.sampler
    uniform = load_config(RECIPES_DIR / "arithmetic" / "grpo_uniform.yaml", ["--output_dir", str(tmp_path)])
    assert not uniform.qdc.sampler and uniform.grpo == cfg.grpo  # the same warm-up: one shared model
    smoke = load_config(RECIPE, ["--output_dir", str(tmp_path), "--smoke", "true"])
    t = smoke.training
    assert smoke.grpo.sft_steps == 4 and t.num_generations == 2
    assert t.generation_batch_size == t.per_device_train_batch_size * t.steps_per_generation
    assert t.generation_batch_size % t.num_generations == 0


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--task", "dataset", "--dataset_name", "json", "--quality", "none"], "needs task: arithmetic"),
        (["--loss_weighting", "importance"], "under trainer grpo"),
        (["--sft_steps", "-1"], "sft_steps=-1"),
        (["--eval_samples", "0"], "eval_samples=0"),
    ],
)
def test_bad_grpo_settings_are_refused(tmp_path, flags, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RECIPE, ["--output_dir", str(tmp_path), *flags])


def test_the_warm_up_is_reused_with_the_same_settings_and_refused_with_others(tmp_path):
    flags = ["--output_dir", str(tmp_path / "run"), "--sft_output_dir", str(tmp_path / "sft"), "--smoke", "true"]
    cfg = load_config(RECIPE, flags)
    model, tokenizer = load_model_and_tokenizer(cfg)
    train = load_splits(cfg)["train"]
    warmed = warm_up(cfg, model, tokenizer, train)
    assert (tmp_path / "sft" / SFT_MARKER).is_file()
    again = warm_up(cfg, *load_model_and_tokenizer(cfg), train)  # loaded, not trained again
    assert all((a == b).all() for a, b in zip(warmed.state_dict().values(), again.state_dict().values()))
    other = load_config(RECIPE, [*flags, "--sft_learning_rate", "0.01"])
    with pytest.raises(ValueError, match="sft_learning_rate"):
        warm_up(other, *load_model_and_tokenizer(other), train)


def test_verifier_reward_pays_correct_solutions_only():
    prompt = "Compute (12 + 7) * 3.\n"
    right = "Step 1: 12 + 7 = 19.\nStep 2: 19 * 3 = 57.\nAnswer: 57"
    assert verifier_reward([prompt, prompt], [right, right.replace("57", "58")]) == [1.0, 0.0]


def test_smoke_run_through_the_cli(tmp_path, capsys):
    code = main(
        ["train", "--config", str(RECIPE), "--smoke", "true", "--output_dir", str(tmp_path / "run"),
         "--sft_output_dir", str(tmp_path / "sft")]
    )  # fmt: skip
    assert code == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for key in ("before_pass@1_validation", "after_pass@2_test_ood", "rollout_zero_signal_share_start"):
        assert key in results
    assert "grpo" in json.loads((tmp_path / "run" / "qdc_run.json").read_text())
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert any("qdc/rollout/pass@1" in r for r in state["log_history"])
