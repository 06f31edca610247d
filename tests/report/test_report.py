"""Run reports and dataset profiles: loaders by hand, pages and figures, the Pareto frontier, errors."""

from __future__ import annotations

import json
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from qdc_trainer.metrics import mean_nearest_neighbor_distance  # noqa: E402
from qdc_trainer.report import (  # noqa: E402
    cluster_quality_diversity,
    collapse_steps,
    find_state_file,
    load_run,
    log_series,
    nearest_neighbor_distances,
    pareto_frontier,
    read_samples,
    write_profile_report,
    write_run_report,
)

RUN_FIGURES = ["training.png", "diversity.png", "generation.png", "sampler.png", "collapse.png", "other.png"]
WARNING_STEP, COLLAPSE_STEP = 30, 50  # planted in the narrowing run
STEPS = range(0, 101, 10)


# --------------------------------------------------------------------------- synthetic run folders


def synthetic_history(narrowing: bool) -> list[dict]:
    """A log history as the Trainer writes it: training logs, monitor logs, detector logs, evaluations."""
    history = []
    for step in STEPS:
        d2 = 0.9 - (0.01 * max(0, step - 20) if narrowing else 0.0)
        history.append(
            {
                "epoch": step / 100,
                "step": step,
                "qdc/gen/per_input/distinct_1": d2 - 0.1,
                "qdc/gen/across_input/distinct_1": d2 - 0.05,
                "qdc/gen/per_input/distinct_2": d2,
                "qdc/gen/across_input/distinct_2": d2 + 0.05,
                "qdc/gen/per_input/self_bleu": 1 - d2,
                "qdc/gen/across_input/self_bleu": 0.95 - d2,
                "qdc/gen/length": 12.0,
                "qdc/gen/entropy": 3 * d2,
                "qdc/gen/repetition": 0.0,
                "qdc/gen/empty_rate": 0.0,
                "qdc/gen/quality": 0.8,
                "qdc/gen/seconds": 0.25,
                "qdc/probe/score": 0.5,  # a key of no known group: the "other" figure
            }
        )
        level = 0.0
        if narrowing and step >= WARNING_STEP:
            level = 2.0 if step >= COLLAPSE_STEP else 1.0
        history.append(
            {
                "epoch": step / 100,
                "step": step,
                "qdc/collapse/level": level,
                "qdc/collapse/gen/per_input/distinct_2/change": 0.9 - d2,
                "qdc/collapse/gen/per_input/distinct_2/level": level,
            }
        )
        if step:
            history.append(
                {
                    "epoch": step / 100,
                    "step": step,
                    "loss": 3.0 - step / 50,
                    "grad_norm": 1.0,
                    "learning_rate": 1e-3,
                    "qdc/train/entropy": 3.5 - step / 100,
                    "qdc/sampler/ess_ratio": 0.7,
                    "qdc/sampler/weight_entropy": 0.9,
                    "qdc/sampler/quality_trained": 0.8,
                    "qdc/sampler/quality_dataset": 0.7,
                    "qdc/sampler/cluster_coverage": 1.0,
                    "qdc/sampler/updates": float(step // 10),
                }
            )
            history.append({"epoch": step / 100, "step": step, "eval_loss": 3.2 - step / 60, "eval_runtime": 0.1})
    history.append({"epoch": 1.0, "step": 100, "train_runtime": 12.0, "train_loss": 2.0})
    return history


def write_run(folder: Path, narrowing: bool) -> Path:
    folder.mkdir(parents=True)
    state = {"global_step": 100, "max_steps": 100, "log_history": synthetic_history(narrowing)}
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))
    rows = []
    for step in (0, 50, 100):
        for p, prompt in enumerate(["the cat", "a dog <i>ran</i>", "first add"]):
            for j in range(2):
                if (step, p, j) == (100, 1, 1):
                    continue  # not generated
                completion = (
                    f"step {step} sample {j}: <b>bold</b> & more" if p == 0 and j == 0 else f"text {step} {p} {j}"
                )
                completion = "" if (step, p, j) == (100, 2, 1) else completion
                rows.append(
                    {
                        "step": step,
                        "prompt_index": p,
                        "prompt": prompt,
                        "sample": j,
                        "completion": completion,
                        "num_tokens": 5,
                    }
                )
    with open(folder / "qdc_generations.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 100, "prompt_ind')  # a line cut short when training was killed
    (folder / "qdc_run.json").write_text(json.dumps({"tradeoff": 0.25, "recipe": "sft <demo>"}))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return write_run(root / "healthy", narrowing=False), write_run(root / "narrowing", narrowing=True)


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write_run_report(runs, out)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_real_image(path: Path) -> None:
    import matplotlib.image

    width, height = png_size(path)
    assert width >= 400 and height >= 250, (path.name, width, height)
    assert path.stat().st_size > 10_000, path.name
    pixels = matplotlib.image.imread(path)
    assert pixels.std() > 0.05, f"{path.name} is blank"


def table_row(page: str, label: str) -> str:
    rows = re.findall(r"<tr>.*?</tr>", page, re.S)
    return next(r for r in rows if f"</span>{label}</td>" in r)


# --------------------------------------------------------------------------- loading, by hand


def test_log_series_keeps_finite_numbers_sorted_by_step():
    history = [
        {"loss": 2.0, "flag": True, "name": "x", "step": 20},
        {"loss": 3.0, "eval_loss": float("nan"), "step": 10},
        {"loss": 1.0},  # no step: skipped
        {"qdc/gen/per_input/self_bleu": float("inf"), "step": 30},
        {"loss": 1.5, "step": 30},
    ]
    series = log_series(history)
    assert set(series) == {"loss"}
    steps, values = series["loss"]
    assert steps.tolist() == [10, 20, 30] and values.tolist() == [3.0, 2.0, 1.5]


def test_collapse_steps_by_hand():
    def level(*pairs):
        return {"qdc/collapse/level": (np.array([p[0] for p in pairs]), np.array([float(p[1]) for p in pairs]))}

    assert collapse_steps(level((0, 0), (10, 0), (20, 1), (30, 1), (40, 2), (50, 2))) == (20, 40)
    assert collapse_steps(level((0, 0), (10, 2))) == (10, 10)  # straight to collapse: the warning is there too
    assert collapse_steps(level((0, 0), (10, 1), (20, 0))) == (10, None)
    assert collapse_steps(level((0, 0), (10, 0))) == (None, None)
    assert collapse_steps(log_series(synthetic_history(narrowing=True))) == (WARNING_STEP, COLLAPSE_STEP)


def test_load_run_reads_state_samples_and_description(runs):
    run = load_run(runs[1])
    assert run.label == "narrowing" and run.global_step == 100
    assert (run.warning_step, run.collapse_step) == (WARNING_STEP, COLLAPSE_STEP)
    assert run.series["loss"][0].tolist() == list(STEPS)[1:]
    assert len(run.samples) == 3 * 3 * 2 - 1  # the cut-short last line is skipped
    assert run.config == {"tradeoff": 0.25, "recipe": "sft <demo>"}
    assert read_samples(runs[1] / "qdc_generations.jsonl")[0]["prompt"] == "the cat"


def test_the_latest_checkpoint_state_is_read(tmp_path):
    for step in (5, 12, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
        state = {"global_step": step, "log_history": [{"loss": 1.0 / step, "step": step}]}
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-99").mkdir()  # no state inside: not a candidate
    (tmp_path / "qdc_run.json").write_text('{"lr": 0.001}')
    assert find_state_file(tmp_path) == tmp_path / "checkpoint-12" / "trainer_state.json"
    run = load_run(tmp_path, label="mine")
    assert run.global_step == 12 and run.label == "mine" and run.config == {"lr": 0.001}
    checkpoint = load_run(tmp_path / "checkpoint-5")  # a checkpoint folder itself; its parent holds the description
    assert checkpoint.global_step == 5 and checkpoint.config == {"lr": 0.001}
    assert load_run(tmp_path / "checkpoint-9" / "trainer_state.json").global_step == 9  # a state file itself


def test_missing_folder_or_state_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder .*nowhere.* does not exist"):
        write_run_report([tmp_path / "nowhere"], tmp_path / "out")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty-run.* has no trainer_state\.json"):
        write_run_report([tmp_path / "empty-run"], tmp_path / "out")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "trainer_state.json").write_text('{"global_step": 3}')
    with pytest.raises(ValueError, match="broken.*no log_history"):
        load_run(tmp_path / "broken")
    with pytest.raises(ValueError, match="at least one run"):
        write_run_report([], tmp_path / "out")
    assert not (tmp_path / "out" / "report.html").exists()


def test_labels_must_match_the_runs(runs, tmp_path):
    with pytest.raises(ValueError, match="1 labels for 2 run folders"):
        write_run_report(runs, tmp_path, labels=["only one"])


def test_missing_matplotlib_names_the_extra(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'qdc-trainer\[plot\]'"):
        write_run_report(runs, tmp_path)


# --------------------------------------------------------------------------- the run report


def test_run_report_writes_the_page_and_the_figures(report):
    out = report.parent
    assert report.name == "report.html" and (out / "report.md").is_file()
    page = report.read_text(encoding="utf-8")
    for name in RUN_FIGURES:
        assert_real_image(out / name)
        assert f"<img src='{name}'" in page  # by relative path: the folder can move
        assert f"]({name})" in (out / "report.md").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_run_report_names_the_runs_and_the_collapse_steps(report, runs):
    page = report.read_text(encoding="utf-8")
    healthy, narrowing = table_row(page, "healthy"), table_row(page, "narrowing")
    assert str(runs[0]) in healthy and str(runs[1]) in narrowing
    assert re.findall(r"<td>([^<]*)</td>", narrowing)[-2:] == [f"step {WARNING_STEP}", f"step {COLLAPSE_STEP}"]
    assert re.findall(r"<td>([^<]*)</td>", healthy)[-2:] == ["none", "none"]
    assert "<td>100</td>" in narrowing and "<td>1</td>" in narrowing  # steps and final loss (3 - 100/50)
    assert (
        f"Collapse warning: step {WARNING_STEP} (qdc/gen/per_input/distinct_2); "
        f"collapse: step {COLLAPSE_STEP} (qdc/gen/per_input/distinct_2)."
    ) in page
    assert "Collapse warning: none; collapse: none." in page
    # the summary tables give first and last values of every key
    assert "<td>qdc/gen/per_input/distinct_2</td><td>11</td><td>0.9 (step 0)</td><td>0.1 (step 100)</td>" in page
    assert "&quot;recipe&quot;: &quot;sft &lt;demo&gt;&quot;" in page  # the run description, escaped


def test_run_report_escapes_the_samples(report):
    page = report.read_text(encoding="utf-8")
    assert "completion at step 0</th><th>completion at step 100</th>" in page  # first and last evaluation
    assert "step 0 sample 0: &lt;b&gt;bold&lt;/b&gt; &amp; more" in page
    assert "step 100 sample 0: &lt;b&gt;bold&lt;/b&gt; &amp; more" in page
    assert "a dog &lt;i&gt;ran&lt;/i&gt;" in page
    assert "<b>bold</b>" not in page and "<i>ran</i>" not in page
    markdown = (report.parent / "report.md").read_text(encoding="utf-8")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in markdown and "<b>bold</b>" not in markdown
    assert "text 50" not in page  # only the first and the last evaluation are shown
    assert "<td class='text'>text 0 2 1</td><td class='text'><span class='muted'>(empty)</span></td>" in page
    assert "<td class='text'>text 0 1 1</td><td class='text'>\u2014</td>" in page  # missing at step 100


def test_only_the_groups_that_were_logged_are_drawn(tmp_path):
    run = tmp_path / "plain"
    run.mkdir()
    history = [{"loss": 3.0 - i / 10, "grad_norm": 1.0, "step": i} for i in range(1, 6)]
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 5, "log_history": history}))
    page = write_run_report([run], tmp_path / "out").read_text(encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["training.png"]
    assert_real_image(tmp_path / "out" / "training.png")
    assert re.findall(r"<td>([^<]*)</td>", table_row(page, "plain"))[-2:] == ["not logged", "not logged"]
    assert "No generation samples" in page


def test_step_ticks_are_whole_numbers(tmp_path, monkeypatch):
    """Two logged steps used to be labelled 1.0, 1.5, 2.0: every x tick of a run figure is a whole step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from qdc_trainer.report import figures

    drawn = []
    real = figures.figure_class

    def spy():
        class Spy(real()):
            def savefig(self, *args, **kwargs):
                drawn.append(self)
                return super().savefig(*args, **kwargs)

        return Spy

    monkeypatch.setattr(figures, "figure_class", spy)
    run = tmp_path / "short"
    run.mkdir()
    history = [{"loss": 3.0 - i / 10, "qdc/gen/length": 5.0 + i, "step": i} for i in (1, 2)]
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": history}))
    write_run_report([run], tmp_path / "out")
    assert drawn
    for fig in drawn:
        FigureCanvasAgg(fig).draw()
        for ax in fig.axes:
            if ax.get_visible():
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_report_of_a_real_trainer_run(tmp_path, tokenizer):
    from datasets import Dataset
    from helpers import build_gpt2, cpu_training_args
    from transformers import DataCollatorForLanguageModeling, TrainerCallback

    from qdc_trainer import (
        CollapseDetectorCallback,
        GenerationMonitorCallback,
        GenerationMonitorConfig,
        QDCSampler,
        QDCSamplerConfig,
        QDCTrainer,
        SeriesDetector,
    )

    planted = [0.8, 0.8, 0.6, 0.4]  # -25% at step 3 (warning at 15%), -50% at step 4 (collapse at 35%)

    class LogPlanted(TrainerCallback):  # a series the detector watches, with a known collapse
        def on_step_end(self, args, state, control, **kwargs):
            keep = control.should_log  # logging clears it: keep the Trainer's own decision (as the monitor does)
            trainer.log({"qdc/probe/diversity": planted[state.global_step - 1]})
            control.should_log = keep

    texts = ["the cat sat on the mat", "a dog ran in the park", "first add 2 and 3 to get 5"] * 8
    ds = Dataset.from_dict(
        {"text": texts, "quality": [1.0, 0.5, 0.2] * 8, "complexity": [6.0, 6.0, 8.0] * 8, "cluster": [0, 1, 2] * 8}
    ).map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    folder = tmp_path / "run"
    args = cpu_training_args(folder, max_steps=4, logging_steps=2, eval_strategy="steps", eval_steps=2)
    monitor = GenerationMonitorCallback(
        ["the cat", "a dog"], config=GenerationMonitorConfig(num_samples=2, max_new_tokens=6)
    )
    trainer = QDCTrainer(
        model=build_gpt2(tokenizer),
        args=args,
        train_dataset=ds,
        eval_dataset=ds.select(range(6)).remove_columns(["quality", "complexity", "cluster"]),
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        qdc_sampler=QDCSampler.from_dataset(ds, config=QDCSamplerConfig(update_every=2)),
        callbacks=[
            monitor,
            CollapseDetectorCallback(watch=[SeriesDetector("qdc/probe/diversity", ema=1.0)], actions=("log",)),
        ],
    )
    trainer.add_callback(LogPlanted())
    trainer.train()
    trainer.state.save_to_json(str(folder / "trainer_state.json"))

    run = load_run(folder)
    history = trainer.state.log_history
    for key in (
        "loss",
        "eval_loss",
        "qdc/train/entropy",
        "qdc/gen/per_input/distinct_2",
        "qdc/sampler/ess_ratio",
        "qdc/collapse/level",
        "qdc/probe/diversity",
    ):
        expected = [(e["step"], e[key]) for e in history if key in e and math.isfinite(e[key])]
        assert expected, key
        assert list(zip(run.series[key][0].tolist(), run.series[key][1].tolist())) == expected, key
    assert run.global_step == 4 and (run.warning_step, run.collapse_step) == (3, 4)
    assert len(run.samples) == monitor.evaluations * 2 * 2
    page = write_run_report([folder], tmp_path / "out", labels=["tiny <gpt2>"])
    text = page.read_text(encoding="utf-8")
    assert "tiny &lt;gpt2&gt;" in text and "tiny <gpt2>" not in text
    for name in RUN_FIGURES:  # the planted series is an "other" qdc/ key
        assert_real_image(page.parent / name)
    assert "Collapse warning: step 3 (qdc/probe/diversity); collapse: step 4 (qdc/probe/diversity)." in text
    assert "completion at step 0</th><th>completion at step 4</th>" in text


# --------------------------------------------------------------------------- the Pareto frontier and per-point measures


def test_pareto_frontier_by_hand():
    #            0       1       2       3       4       5       6         7 (= 3)   8 (NaN)
    x = np.array([1.0, 2.0, 3.0, 4.0, 2.0, 3.0, 0.5, 4.0, np.nan])
    y = np.array([5.0, 4.0, 4.0, 1.0, 3.0, 2.0, 5.0, 1.0, 9.0])
    front = pareto_frontier(x, y).tolist()
    # (1, 5) beats (0.5, 5); (3, 4) beats (2, 4), (2, 3) and (3, 2); (4, 1) is the rightmost, kept once
    assert front == [0, 2, 3]
    assert pareto_frontier([1.0], [1.0]).tolist() == [0]
    assert pareto_frontier([1, 2, 3], [1, 2, 3]).tolist() == [2]  # one point beats all
    assert pareto_frontier([1, 2, 3], [3, 2, 1]).tolist() == [0, 1, 2]  # a pure trade-off: all on it
    with pytest.raises(ValueError, match="same length"):
        pareto_frontier([1, 2], [1])


def test_pareto_frontier_is_exactly_the_undominated_set():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 40))
        x, y = rng.integers(0, 6, n).astype(float), rng.integers(0, 6, n).astype(float)  # many ties
        front = pareto_frontier(x, y)
        assert np.all(np.diff(x[front]) > 0) and np.all(np.diff(y[front]) < 0)  # increasing x, decreasing y
        for i in range(n):
            dominated = np.any((x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i])))
            on_front = any(x[j] == x[i] and y[j] == y[i] for j in front)
            assert dominated != on_front, (trial, i)


def test_nearest_neighbor_distances_match_the_metric():
    e = np.random.default_rng(1).normal(size=(50, 8))
    d = nearest_neighbor_distances(e, chunk_size=7)
    assert d.shape == (50,) and d.mean() == pytest.approx(mean_nearest_neighbor_distance(e))
    assert nearest_neighbor_distances([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]).tolist() == [0.0, 0.0, 1.0]


def test_cluster_quality_diversity_draws_the_same_number_of_texts_per_cluster():
    texts = [f"w{i} w{i + 1}" for i in range(40)] + ["same words"] * 4
    clusters = [0] * 40 + [1] * 4
    quality = [1.0] * 40 + [0.5, 0.5, np.nan, 0.5]
    r = cluster_quality_diversity(quality, clusters, texts)
    assert r["cluster"].tolist() == ["0", "1"] and r["size"].tolist() == [40, 3]
    assert r["max_texts"] == 21  # the median of 40 and 3, rounded down
    assert r["distinct_2"][0] == 1.0 and r["distinct_2"][1] == pytest.approx(1 / 3)
    assert r["quality"].tolist() == [1.0, 0.5]
    assert cluster_quality_diversity(quality, clusters, texts, max_texts=5)["max_texts"] == 5


# --------------------------------------------------------------------------- the dataset profile


def profile_data(n: int = 120) -> dict[str, list]:
    rng = np.random.default_rng(0)
    words = "the cat sat on mat a dog ran in park first add to get then".split()
    clusters = rng.integers(0, 6, n)
    texts = [" ".join(rng.choice(words[: 4 + 2 * c], size=8)) for c in clusters]  # cluster c: 4 + 2c words
    return {
        "text": texts,
        "quality": rng.beta(2, 5, n).round(3).tolist(),
        "complexity": rng.poisson(6, n).astype(float).tolist(),
        "cluster": clusters.tolist(),
    }


def test_profile_report_of_a_scored_dataset(tmp_path):
    from datasets import Dataset

    data = profile_data()
    page = write_profile_report(Dataset.from_dict(data), tmp_path)
    assert page.name == "profile.html" and (tmp_path / "profile.md").is_file()
    text = page.read_text(encoding="utf-8")
    for name in ("quality_hist.png", "complexity_hist.png", "cluster_sizes.png", "quality_diversity.png"):
        assert_real_image(tmp_path / name)
        assert f"<img src='{name}'" in text
    assert "<td>examples</td><td>120</td>" in text and "<td>clusters</td><td>6</td>" in text
    assert f"{np.mean(data['quality']):.4g}" in text  # the mean quality
    from qdc_trainer.metrics import distinct_n

    assert f"<td>distinct-2 of the texts</td><td>{distinct_n(data['text'], 2):.4g}</td>" in text
    # the frontier table lists exactly the Pareto-optimal clusters
    per = cluster_quality_diversity(data["quality"], data["cluster"], data["text"])
    expected = {per["cluster"][i] for i in pareto_frontier(per["distinct_2"], per["quality"])}
    table = text.split("On the Pareto frontier")[1]
    listed = set(re.findall(r"<tr><td>([^<]+)</td>", table))
    assert listed == expected and expected
    assert "not found" not in text


def test_profile_with_embeddings_plots_examples(tmp_path):
    import pandas as pd

    data = profile_data(80)
    embeddings = np.random.default_rng(2).normal(size=(80, 6))
    page = write_profile_report(pd.DataFrame(data), tmp_path, embeddings=embeddings)
    text = page.read_text(encoding="utf-8")
    assert "Each point is an example" in text and "distance to nearest" in text
    assert_real_image(tmp_path / "quality_diversity.png")
    d = nearest_neighbor_distances(embeddings)
    front = pareto_frontier(d, data["quality"])
    table = text.split("On the Pareto frontier")[1]
    assert [int(i) for i in re.findall(r"<tr><td>(\d+)</td>", table)] == front.tolist()  # highest quality first
    with pytest.raises(ValueError, match="one row per example"):
        write_profile_report(data, tmp_path, embeddings=embeddings[:5])


def test_profile_skips_what_is_missing_and_says_so(tmp_path):
    data = profile_data(40)
    page = write_profile_report({"text": data["text"], "score": data["quality"]}, tmp_path, quality_column="score")
    text = page.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["quality_hist.png"]
    assert "column &#x27;complexity&#x27; not found" in text and "column &#x27;cluster&#x27; not found" in text
    assert "quality-versus-diversity plot needs embeddings, or the cluster and text columns" in text
    assert "distinct-1 of the texts" in text


def test_profile_with_no_usable_column_is_a_clear_error(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"quality_column='quality'.*complexity_column='complexity'.*"
        r"cluster_column='cluster'.*text_column='text'.*\['prompt', 'answer'\]",
    ):
        write_profile_report({"prompt": ["a"], "answer": ["b"]}, tmp_path)
    with pytest.raises(ValueError, match="differ in length"):
        write_profile_report({"quality": [1.0, 2.0], "text": ["a"]}, tmp_path)
    with pytest.raises(TypeError, match="'quality' must hold numbers"):
        write_profile_report({"quality": ["good", "bad"]}, tmp_path)
    with pytest.raises(TypeError, match="DataFrame or a dict of lists"):
        write_profile_report([1, 2, 3], tmp_path)


def test_monitor_timing_is_a_generation_series():
    from qdc_trainer.report import key_group

    assert key_group("qdc/gen/seconds") == "generation"
    assert key_group("qdc/probe/score") == "other"


def test_key_groups_come_from_the_modules_that_log_them():
    """The report's key groups are the constants of the monitor and the sampler: every key they log is placed."""
    from qdc_trainer import GenerationMonitorCallback, GenerationMonitorConfig, QDCSampler
    from qdc_trainer.callbacks.monitor import DIVERSITY_METRICS, PREFIX, SCOPES
    from qdc_trainer.data.sampler import TELEMETRY_KEYS, TELEMETRY_PREFIX
    from qdc_trainer.report import key_group

    monitor = GenerationMonitorCallback(
        ["a", "b"],
        scorer=lambda prompts, completions: [1.0] * len(completions),
        config=GenerationMonitorConfig(num_samples=2, max_new_tokens=2),
    )
    for key in [PREFIX + k for k in monitor.metric_keys()] + [PREFIX + "seconds"]:
        group = key_group(key)
        assert group in ("diversity", "generation"), key
        if group == "diversity":
            scope, name = key[len(PREFIX) :].split("/", 1)
            assert scope in SCOPES and name in DIVERSITY_METRICS, key
    sampler = QDCSampler(12, quality=np.arange(12.0), complexity=np.ones(12), clusters=np.arange(12) % 3)
    sampler.record(np.arange(6), np.ones(6))
    sampler.update()
    logged = sampler.telemetry()
    assert {"qdc/sampler/cluster_coverage", "qdc/sampler/quality_trained", "qdc/sampler/loss_ema"} <= set(logged)
    for key in logged:
        name = key.removeprefix(TELEMETRY_PREFIX).removesuffix("_trained").removesuffix("_dataset")
        assert key_group(key) == "sampler" and name in TELEMETRY_KEYS, key
