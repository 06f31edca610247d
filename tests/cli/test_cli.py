"""The qdc command line and the recipes: every recipe parses, every --help works, bad configs name the problem."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from qdc_trainer import GenerationMonitorConfig, QDCSamplerConfig
from qdc_trainer.cli import main
from qdc_trainer.cli.config import (
    ConfigError,
    MonitorArguments,
    QDCArguments,
    SamplerArguments,
    load_config,
    recipe_experiment,
)
from qdc_trainer.cli.recipes import RECIPES_DIR, packaged_recipes, recipe_description, resolve_recipe
from qdc_trainer.experiments.self_improve import load_self_improve_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(RECIPES_DIR.rglob("*.yaml"))
# Device-dependent settings a CPU-only machine cannot validate (bf16 needs a GPU); the rest is checked as written.
ON_CPU = {"sft_smollm2_alpaca.yaml": ["--bf16", "false", "--use_cpu", "true"]}


def test_there_are_recipes_for_every_trainer():
    names = {p.relative_to(RECIPES_DIR).as_posix() for p in RECIPES}
    assert {"arithmetic/sft_qdc.yaml", "arithmetic/sft_baseline.yaml", "arithmetic/sft_trl.yaml"} <= names
    assert any(n.startswith("hub/") for n in names)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_and_validates(recipe, tmp_path):
    if recipe_experiment(recipe) == "self_improve":
        cfg = load_self_improve_config(recipe, ["--output_dir", str(tmp_path)])
        assert cfg.output_dir == str(tmp_path) and cfg.experiment == "self_improve"
    else:
        cfg = load_config(recipe, ON_CPU.get(recipe.name, []) + ["--output_dir", str(tmp_path)])
        assert cfg.training.output_dir == str(tmp_path)
        assert cfg.source == str(recipe)
    text = recipe.read_text()
    assert text.lstrip().startswith("#")  # every recipe says what it is for


def test_recipe_values_reach_the_dataclasses():
    cfg = load_config(RECIPES_DIR / "arithmetic" / "sft_qdc.yaml")
    assert (cfg.qdc.trainer, cfg.qdc.sampler, cfg.qdc.monitor, cfg.data.task) == ("qdc", True, True, "arithmetic")
    assert cfg.training.use_cpu and cfg.training.report_to == ["tensorboard"]
    baseline = load_config(RECIPES_DIR / "arithmetic" / "sft_baseline.yaml")
    assert baseline.qdc.trainer == "plain" and not baseline.qdc.sampler
    trl = load_config(RECIPES_DIR / "arithmetic" / "sft_trl.yaml")
    assert type(trl.training).__name__ == "SFTConfig" and trl.training.completion_only_loss


def test_flags_override_the_file():
    cfg = load_config(
        RECIPES_DIR / "arithmetic" / "sft_qdc.yaml", ["--max_steps", "7", "--probes", "3", "--sampler", "false"]
    )
    assert (cfg.training.max_steps, cfg.qdc.probes, cfg.qdc.sampler) == (7, 3, False)


@pytest.mark.parametrize(
    "yaml_text, flags, message",
    [
        ("max_steps: 3\nlerning_rate: 0.1\n", [], "unknown key 'lerning_rate'.*did you mean learning_rate"),
        ("max_steps: three\n", [], "max_steps.*invalid int value: 'three'"),
        ("embedder: bert\n", [], "embedder.*invalid choice: 'bert'.*'hashing', 'minilm'"),
        ("trainer: keras\n", [], "trainer='keras' is not one of"),
        ("max_steps: 3\n", ["--probez", "2"], "unknown flag --probez; did you mean --probes"),
        ("- a\n- b\n", [], "flat mapping"),
        ("model:\n  n_layer: 2\n", [], "nested mapping"),
        ("detector_actions: [log, explode]\n", [], "detector_actions \\['explode'\\]"),
        ("task: dataset\n", [], "needs dataset_name"),
        ("noise: 1.5\n", [], "noise=1.5 must be in"),
        ("detector_watch: [loss]\n", [], "detector_watch: 'loss' has no known settings"),
        ("tradeoff: 1.5\n", [], r"QDC sampler.*tradeoff=1.5 is invalid; it must be \[0, 1\]"),
        ("update_every: 0\n", [], "QDC sampler.*update_every=0 is invalid"),
        ("monitor_num_samples: 1\n", [], "generation monitor.*num_samples=1 must be an int >= 2"),
        ("loss_weighting: heavy\n", [], "loss_weighting.*invalid choice: 'heavy'"),
        ("monitor_samples: 2\nmonitor_num_samples: 3\n", [], "gives both 'monitor_samples' and 'monitor_num_samples'"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, yaml_text, flags, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, flags)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("lerning_rate: 0.1\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "qdc train: error: unknown key 'lerning_rate'" in capsys.readouterr().err
    assert main(["profile", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "no_such_run")]) == 2
    assert "no_such_run" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["train"], ["profile"], ["report"], ["self-improve"]])
def test_every_help_exits_0(command):
    result = subprocess.run(
        [sys.executable, "-m", "qdc_trainer.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    if command in (["train"], ["profile"]):
        assert "--max_steps" in result.stdout and "--tradeoff" in result.stdout  # every recipe key is listed
        assert (
            "--monitor_num_samples" in result.stdout and "generation monitor (GenerationMonitorConfig" in result.stdout
        )
    if command == ["self-improve"]:
        assert "--rounds" in result.stdout and "--budget" in result.stdout and "--arms" in result.stdout


def test_train_hands_a_self_improvement_recipe_over(tmp_path, capsys):
    recipe = RECIPES_DIR / "arithmetic" / "self_improve.yaml"
    assert recipe_experiment(recipe) == "self_improve"
    # The error comes from the self-improvement settings, so train handed the recipe over.
    assert main(["train", "--config", str(recipe), "--budget", "999999"]) == 2
    err = capsys.readouterr().err
    assert "qdc self-improve: error" in err and "larger than candidates" in err
    with pytest.raises(ConfigError, match="recipe of an experiment .experiment: self_improve.*qdc self-improve"):
        load_config(recipe)  # what `qdc profile` reads
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: evolve\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "experiment='evolve' is none of ['self_improve']" in capsys.readouterr().err
    bad.write_text("experiment: [1]\n")
    with pytest.raises(ConfigError, match="must name an experiment"):
        recipe_experiment(bad)


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == "qdc"]
    assert entry.value == "qdc_trainer.cli:main"


def test_smoke_lets_an_explicit_flag_win():
    recipe = RECIPES_DIR / "arithmetic" / "sft_qdc.yaml"
    cfg = load_config(recipe, ["--smoke", "true", "--max_steps", "2", "--probes=3"])
    assert cfg.training.max_steps == 2 and cfg.qdc.probes == 3  # the flags win
    assert cfg.monitor.num_samples == 2 and cfg.data.train_size == 64  # smoke sets the rest, over the recipe's values
    assert load_config(recipe, ["--smoke", "true"]).training.max_steps == 4


def test_a_reporting_backend_that_is_not_installed_is_named_before_training(monkeypatch, capsys):
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "is_tensorboard_available", lambda: False)
    recipe = str(RECIPES_DIR / "arithmetic" / "sft_qdc.yaml")
    with pytest.raises(
        ConfigError, match=r"report_to \['tensorboard'\] is not installed; pip install 'qdc-trainer\[tensorboard\]'"
    ):
        load_config(recipe)
    assert main(["train", "--config", recipe, "--smoke", "true"]) == 2
    assert "qdc-trainer[tensorboard]" in capsys.readouterr().err
    assert load_config(recipe, ["--report_to", "none"]).training.report_to in ([], ["none"], "none")


def test_the_sampler_and_monitor_settings_are_the_library_dataclasses():
    cfg = load_config(
        None,
        ["--output_dir", "out", "--seed", "7", "--tradeoff", "0.3", "--floor", "0.2", "--monitor_num_samples", "3"]
        + ["--monitor_top_p", "0.9", "--no_monitor_at_start"],
    )
    # every knob, its default and its checks come from QDCSamplerConfig and GenerationMonitorConfig; the seed is
    # the training seed
    assert cfg.sampler == QDCSamplerConfig(tradeoff=0.3, floor=0.2, seed=7)
    assert cfg.monitor == GenerationMonitorConfig(num_samples=3, top_p=0.9, at_start=False, seed=7)
    defaults = load_config(None, ["--output_dir", "out"])
    assert defaults.sampler == QDCSamplerConfig(seed=defaults.training.seed)
    assert defaults.monitor == GenerationMonitorConfig(seed=defaults.training.seed)
    sampler_keys = {f.name for f in dataclasses.fields(SamplerArguments)}
    assert sampler_keys == {f.name for f in dataclasses.fields(QDCSamplerConfig)} - {"seed"}
    assert {f.name for f in dataclasses.fields(MonitorArguments)} == {
        f"monitor_{f.name}" for f in dataclasses.fields(GenerationMonitorConfig)
    } - {"monitor_seed", "monitor_generation_kwargs"}
    assert not sampler_keys & {f.name for f in dataclasses.fields(QDCArguments)}  # declared once


def test_the_previous_releases_monitor_keys_still_work_with_a_warning(tmp_path):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("monitor_samples: 3\nmonitor_every: 7\n")
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config(recipe, ["--output_dir", str(tmp_path)])
    messages = [str(w.message) for w in caught]
    assert any("the key 'monitor_samples' is now 'monitor_num_samples'" in m for m in messages)
    assert any("the key 'monitor_every' is now 'monitor_every_n_steps'" in m for m in messages)
    assert (cfg.monitor.num_samples, cfg.monitor.every_n_steps) == (3, 7)
    with pytest.warns(FutureWarning, match="--monitor_every is now --monitor_every_n_steps"):
        cfg = load_config(None, ["--output_dir", str(tmp_path), "--monitor_every=5", "--smoke", "true"])
    assert cfg.monitor.every_n_steps == 5  # a flag wins over smoke's setting under its old name too


def test_a_packaged_recipe_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: only the package's own recipes
    packaged = str(RECIPES_DIR / "arithmetic" / "sft_qdc.yaml")
    for name in ("arithmetic/sft_qdc", "arithmetic/sft_qdc.yaml", "recipes/arithmetic/sft_qdc.yaml"):
        assert resolve_recipe(name) == packaged, name
        cfg = load_config(name, ["--report_to", "none"])
        assert cfg.source == packaged and cfg.qdc.trainer == "qdc" and cfg.training.output_dir == "runs/sft_qdc"
    assert recipe_experiment("arithmetic/self_improve") == "self_improve"
    # A file on disk wins over a packaged recipe of the same name.
    (tmp_path / "arithmetic").mkdir()
    (tmp_path / "arithmetic" / "sft_qdc.yaml").write_text("trainer: plain\nreport_to: none\n")
    assert resolve_recipe("arithmetic/sft_qdc.yaml") == "arithmetic/sft_qdc.yaml"
    assert load_config("arithmetic/sft_qdc.yaml").qdc.trainer == "plain"
    with pytest.raises(ConfigError, match="arithmetic/sft_qdcc does not exist, and no packaged recipe.*qdc recipes"):
        load_config("arithmetic/sft_qdcc")


def test_qdc_recipes_lists_every_packaged_recipe_with_its_description(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {
        line.split()[0]: line.split(None, 1)[1] for line in lines if line and line.split()[0] in packaged_recipes()
    }
    assert (
        set(listed)
        == set(packaged_recipes())
        == {p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES}
    )
    assert listed["arithmetic/sft_qdc"].startswith("The main job: a tiny GPT-2 learns noisy arithmetic")
    for name, path in packaged_recipes().items():  # every recipe opens with a one-line description
        description = recipe_description(path)
        assert description and description.endswith(".") and len(description) <= 110, (name, description)
    assert main(["recipes", "--show", "arithmetic/grpo_qdc"]) == 0
    assert capsys.readouterr().out == (RECIPES_DIR / "arithmetic" / "grpo_qdc.yaml").read_text()
    assert main(["recipes", "--show", "arithmetic/nothing"]) == 2
    assert "no packaged recipe is named 'arithmetic/nothing'" in capsys.readouterr().err


def test_every_packaged_recipe_is_package_data_of_the_wheel():
    """The wheel holds what pyproject's package-data globs match: recipes/<group>/<name>.yaml."""
    assert '"recipes/*/*.yaml"' in (ROOT / "pyproject.toml").read_text()
    assert RECIPES and all(len(p.relative_to(RECIPES_DIR).parts) == 2 for p in RECIPES)
    assert RECIPES_DIR == ROOT / "qdc_trainer" / "recipes" and not list(ROOT.glob("recipes/**/*.yaml"))  # one source
