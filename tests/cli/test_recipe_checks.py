"""Recipe files that say nothing, say null, use odd keys, or ask GRPO for the impossible: clean errors (exit 2)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from qdc_trainer.cli import main
from qdc_trainer.cli.config import ConfigError, load_config
from qdc_trainer.cli.recipes import RECIPES_DIR

ROOT = Path(__file__).resolve().parents[2]
GRPO = RECIPES_DIR / "arithmetic" / "grpo_qdc.yaml"


def _run(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "holds no settings"),
        ("# only a comment\n", "holds no settings"),
        ("seed: null\n", "seed: null, but seed has no null value (its default is 42)"),
        ("max_steps: null\n", "max_steps: null, but max_steps has no null value"),
        ("1: 2\n", "the key 1 is a int, not a name"),
        ("true: 3\n", "the key True is a bool, not a name"),
    ],
)
def test_a_recipe_that_says_nothing_or_null_or_has_odd_keys_is_refused(tmp_path, text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match="recipe.yaml") as info:
        load_config(recipe, ["--output_dir", str(tmp_path / "out")])
    assert message in str(info.value)
    code, err = _run("train", "--config", str(recipe), "--output_dir", str(tmp_path / "out"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_null_still_means_the_default_where_the_default_is_null(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("eval_split: null\nmax_train_examples: null\n")
    cfg = load_config(recipe, ["--output_dir", str(tmp_path)])
    assert cfg.data.eval_split is None and cfg.data.max_train_examples is None


@pytest.mark.parametrize("flags", [["--num_generations", "0"], ["--num_generations=1"]])
def test_grpo_with_too_few_generations_is_refused(tmp_path, flags):
    code, err = _run("train", "--config", str(GRPO), "--smoke", "true", "--output_dir", str(tmp_path / "o"), *flags)
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert f"num_generations={flags[-1][-1]} must be at least 2" in err


def test_grpo_into_an_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("mine")
    code, err = _run("train", "--config", str(GRPO), "--smoke", "true", "--output_dir", str(tmp_path / "afile"))
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert "is a file, not a folder" in err and (tmp_path / "afile").read_text() == "mine"
