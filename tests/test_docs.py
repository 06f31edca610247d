"""The documentation: the README and the guides' Python examples run, the site's pages are where the README and the
nav say, and what the guides state about the library holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDES = ["sft", "monitoring", "grpo", "recipes", "self-improvement", "metrics", "troubleshooting", "development"]


def _nav_files(nav) -> list[str]:
    files = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        files += _nav_files(value) if isinstance(value, list) else [value]
    return files


def _mkdocs() -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


PAGES_WITH_CODE = ["README.md"] + [
    f"docs/{f}" for f in _nav_files(_mkdocs()["nav"]) if (DOCS / f).is_file() and _python_blocks(DOCS / f)
]


def test_the_readme_is_short_and_links_every_guide_and_api_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "make demo" in readme and "make test" in readme
    links = set(re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme))
    for guide in GUIDES:
        assert f"docs/guides/{guide}.md" in links, guide
    for page in ("docs/performance.md", "docs/support.md", "CHANGELOG.md"):
        assert page in links, page
    for page in _nav_files(_mkdocs()["nav"]):
        if page.startswith(("api/", "evidence/")) and page != "evidence/sft.md" or page.startswith("guides/"):
            assert f"docs/{page}" in links or page.startswith("evidence/"), page
    for link in links:  # every relative link of the README leads to a file of the repository
        if not link.startswith(("http://", "https://")):
            assert (ROOT / link).exists(), link
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (ROOT / image).is_file(), image


def test_the_nav_holds_every_guide_and_api_page_and_every_page_exists_or_is_owned_elsewhere():
    nav = _nav_files(_mkdocs()["nav"])
    assert nav[0] == "index.md"
    assert {f"guides/{g}.md" for g in GUIDES} <= set(nav)
    assert {p.relative_to(DOCS).as_posix() for p in (DOCS / "guides").glob("*.md")} <= set(nav)
    assert {p.relative_to(DOCS).as_posix() for p in (DOCS / "api").glob("*.md")} <= set(nav)
    assert {p.relative_to(DOCS).as_posix() for p in (DOCS / "evidence").glob("*.md")} <= set(nav)
    assert {"performance.md", "support.md", "changelog.md"} <= set(nav)
    for page in nav:
        assert (DOCS / page).is_file(), page


def test_the_api_reference_covers_every_public_module_area():
    text = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    documented = set(re.findall(r"^::: (\S+)", text, re.M))
    for module in (
        "qdc_trainer.data.sampler",
        "qdc_trainer.data.selection",
        "qdc_trainer.data.collator",
        "qdc_trainer.trainer",
        "qdc_trainer.callbacks.monitor",
        "qdc_trainer.callbacks.collapse",
        "qdc_trainer.callbacks.rollout",
        "qdc_trainer.metrics.diversity",
        "qdc_trainer.grpo",
        "qdc_trainer.cli.config",
        "qdc_trainer.cli.recipes",
    ):
        assert module in documented, module


@pytest.fixture
def page_namespace(tmp_path, monkeypatch, tokenizer):
    """What a page's examples may take as given: a tiny model, its tokenizer and a small scored, tokenized dataset
    (``model``, ``tokenizer``, ``train_ds``); they run in a temporary folder."""
    from datasets import Dataset
    from helpers import build_gpt2

    monkeypatch.chdir(tmp_path)
    texts = ["the cat sat on the mat", "a dog ran in the park", "first add 2 and 3 to get 5"] * 4
    train_ds = Dataset.from_dict(
        {"text": texts, "quality": [0.2, 0.9, 0.5] * 4, "complexity": [1.0, 2.0, 3.0] * 4, "cluster": [0, 1, 2] * 4}
    ).map(lambda b: tokenizer(b["text"]), batched=True)
    # A model of its own: training changes its weights and leaves it in train mode.
    return {"model": build_gpt2(tokenizer), "tokenizer": tokenizer, "train_ds": train_ds}


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_a_pages_python_examples_run(page, page_namespace, tmp_path):
    """Every ```python block of a page runs, in order, in one namespace of the page's own; what the page says of
    the results holds."""
    ns = page_namespace
    blocks = _python_blocks(ROOT / page)
    assert blocks
    for block in blocks:
        exec(compile(block, page, "exec"), ns)
    check = CHECKS.get(page)
    if check is not None:
        check(ns, tmp_path)


def _readme(ns, tmp_path):
    trainer, sampler = ns["trainer"], ns["sampler"]
    assert trainer.state.global_step == 4 and sampler.num_updates == 2  # update_every=2 over 4 steps
    assert [e["step"] for e in ns["plain"].state.log_history if "qdc/gen/entropy" in e] == [0, 2]
    assert (tmp_path / "out-monitored" / "qdc_generations.jsonl").is_file()
    assert any("qdc/collapse/level" in e for e in ns["plain"].state.log_history)
    assert [e["step"] for e in ns["grpo_trainer"].state.log_history if "qdc/rollout/pass@4" in e] == [1]


def _sft(ns, tmp_path):
    assert ns["verify"](["2+3"], ["2 + 3 = 5. The answer is 5."]).tolist() == [1.0]
    assert list(ns["ds"]["quality"]) == [1.0, 0.0, 1.0, 1.0]
    assert list(ns["ds"]["complexity"]) == [2.0, 1.0, 3.0, 1.0]
    trainer, sampler = ns["trainer"], ns["sampler"]
    # 3 epochs (the TrainingArguments default) of 12 examples: the sampler ends in epoch 2 with all 12 fed back.
    assert trainer.state.global_step == 6 and sampler.epoch == 2 and sampler.consumed == 12
    plain = ns["plain"]
    assert plain.num_clusters == 1 and plain.quality is None and plain.complexity is None
    assert plain.probabilities().tolist() == pytest.approx([1 / 12] * 12)


def _monitoring(ns, tmp_path):
    watched, monitor = ns["watched"], ns["monitor"]
    assert monitor.evaluations == 3  # before the first step, then steps 2 and 4
    assert [e["step"] for e in watched.state.log_history if "qdc/gen/entropy" in e] == [0, 2, 4]
    assert (tmp_path / "out-watched" / "qdc_generations.jsonl").is_file()


def _grpo(ns, tmp_path):
    grpo_history = ns["grpo_trainer"].state.log_history  # the GRPO example trained 2 steps
    assert [e["step"] for e in grpo_history if "qdc/rollout/pass@4" in e] == [1, 2]
    assert ns["prompt_sampler"].num_updates == 2  # one refresh per generation batch: GRPO generated at both steps


def _metrics(ns, tmp_path):
    assert ns["verify"](["2+3"], ["2 + 3 = 5. The answer is 5."]).tolist() == [1.0]
    assert "distinct_1" in ns["diversity"].compute(data=ns["texts"])


CHECKS = {
    "README.md": _readme,
    "docs/guides/sft.md": _sft,
    "docs/guides/monitoring.md": _monitoring,
    "docs/guides/grpo.md": _grpo,
    "docs/guides/metrics.md": _metrics,
}


def test_every_page_with_code_is_checked():
    for page in ("README.md", "docs/guides/sft.md", "docs/guides/monitoring.md", "docs/guides/grpo.md"):
        assert page in PAGES_WITH_CODE, page


# ----------------------------------------------------------------------------- what the guides state


def test_the_sampler_telemetry_keys_appear_as_the_sft_guide_says(tmp_path, tokenizer):
    """loss_ema from the first weight refresh on (not at step 1); quality keys only with a quality column."""
    from datasets import Dataset
    from helpers import build_gpt2, cpu_training_args
    from transformers import DataCollatorForLanguageModeling

    from qdc_trainer import QDCSampler, QDCSamplerConfig, QDCTrainer

    ds = Dataset.from_dict({"text": ["the cat sat on the mat", "a dog ran"] * 8, "complexity": [1.0, 2.0] * 8})
    ds = ds.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    sampler = QDCSampler.from_dataset(
        ds, quality_column=None, cluster_column=None, config=QDCSamplerConfig(update_every=3)
    )
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer),
        args=cpu_training_args(tmp_path, max_steps=4, logging_steps=1),
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=sampler,
    )
    trainer.train()
    logs = {e["step"]: e for e in trainer.state.log_history if "loss" in e}
    assert sorted(logs) == [1, 2, 3, 4]
    assert [("qdc/sampler/loss_ema" in logs[s]) for s in (1, 2, 3, 4)] == [False, False, True, True]
    for entry in logs.values():
        assert "qdc/sampler/complexity_trained" in entry and "qdc/sampler/complexity_dataset" in entry
        assert not any(k.startswith("qdc/sampler/quality") for k in entry)
        assert {"qdc/sampler/ess_ratio", "qdc/sampler/weight_entropy", "qdc/sampler/updates"} <= set(entry)
    assert type(trainer.data_collator).__name__ == "QDCDataCollator"  # the trainer wrapped the plain collator


def test_trackers_prefix_training_keys_with_train_as_the_guides_say():
    from transformers.integrations.integration_utils import rewrite_logs

    assert rewrite_logs({"qdc/sampler/ess_ratio": 1.0, "eval_loss": 2.0}) == {
        "train/qdc/sampler/ess_ratio": 1.0,
        "eval/loss": 2.0,
    }


def test_the_changelog_page_includes_the_changelog_with_its_docs_links_made_site_relative():
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_ext" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    config = SimpleNamespace(config_file_path=str(ROOT / "mkdocs.yml"))
    page = SimpleNamespace(file=SimpleNamespace(src_uri="changelog.md"))
    out = hooks.on_page_markdown((DOCS / "changelog.md").read_text(), page, config, None)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert out.startswith("# Changelog") and "## Deprecation policy" in out and "](docs/" not in out
    assert out.count("](") == changelog.count("](")
    other = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    assert hooks.on_page_markdown("[x](docs/a.md)", other, config, None) == "[x](docs/a.md)"
    assert "hooks.py" in (ROOT / "mkdocs.yml").read_text()
