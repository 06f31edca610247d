"""The self-improvement experiment: candidate sampling and scoring, the arms' selection rules, the summary's
claims, the table and plots, the configuration, and a whole run through ``qdc self-improve`` in smoke mode."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qdc_trainer.cli.config import ConfigError
from qdc_trainer.cli.recipes import RECIPES_DIR
from qdc_trainer.experiments.self_improve import (
    METRICS,
    SelfImproveConfig,
    choose,
    load_self_improve_config,
    probe_prompts,
    sample_examples,
    summarize,
    write_results,
)
from qdc_trainer.experiments.self_improve.sampling import _split_example
from qdc_trainer.tasks.arithmetic import ArithmeticConfig, build_model, build_tokenizer, generate_examples, verify

ROOT = Path(__file__).resolve().parents[2]
RECIPE = RECIPES_DIR / "arithmetic" / "self_improve.yaml"


# --------------------------------------------------------------------------- candidates


def test_split_example():
    assert _split_example("What is 2 + 3?\n2 + 3 = 5\nThe answer is 5.") == (
        "What is 2 + 3?\n",
        "2 + 3 = 5\nThe answer is 5.",
    )
    assert _split_example("What is 2") == ("What is 2", "")


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    return build_model(tok, seed=0, n_layer=1, n_embd=32), tok


def test_sample_examples_is_seeded(tiny):
    model, tok = tiny
    state = torch.random.get_rng_state()
    rows = sample_examples(model, tok, ["", "", "What is 2 + 3?\n"], max_new_tokens=12, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global random state is untouched
    assert rows == sample_examples(model, tok, ["", "", "What is 2 + 3?\n"], max_new_tokens=12, seed=3)
    assert rows != sample_examples(model, tok, ["", "", "What is 2 + 3?\n"], max_new_tokens=12, seed=4)
    assert rows[2]["prompt"] == "What is 2 + 3?\n"
    assert all(r["valid"] == 0.0 for r in rows)  # an untrained model writes nothing correct


def test_sample_examples_scores_and_confidence(tiny, monkeypatch):
    """With generate scripted to known continuations, every field is checked by hand; confidence is the mean
    log-likelihood of the generated tokens up to and including end-of-sequence, from a plain forward pass."""
    model, tok = tiny
    eos, pad = tok.eos_token_id, tok.pad_token_id
    prompts = ["", "What is 2 + 3?\n", ""]
    continuations = [
        "Compute (4 + 3) * 2.\nStep 1: 4 + 3 = 7.\nStep 2: 7 * 2 = 14.\nAnswer: 14",  # a correct whole example
        "2 + 3 = 6\nThe answer is 6.",  # a wrong solution to a given prompt
    ]
    gen_ids = [tok(c, add_special_tokens=False)["input_ids"] + [eos] for c in continuations]
    width = max(len(g) for g in gen_ids)
    # The third runs into max_new_tokens before its answer: no end-of-sequence token, no padding.
    long = tok(
        "What is (7 - 2) * 3 + 1?\n7 - 2 = 5\n5 * 3 = 15\n15 + 1 = 16\nThe answer is 16.", add_special_tokens=False
    )["input_ids"]
    assert len(long) > width
    gen_ids.append(long[:width])
    scripted = torch.tensor([g + [pad] * (width - len(g)) for g in gen_ids])
    monkeypatch.setattr(
        model, "generate", lambda input_ids, **kw: torch.cat([input_ids, scripted[: len(input_ids)]], 1)
    )
    rows = sample_examples(model, tok, prompts, max_new_tokens=width)
    assert [r["valid"] for r in rows] == [1.0, 0.0, 0.0]
    assert [r["num_ops"] for r in rows] == [2, 1, 3]
    assert rows[0]["prompt"] == "Compute (4 + 3) * 2.\n" and rows[0]["completion"].startswith("Step 1: 4 + 3 = 7.")
    assert rows[2]["prompt"] == "What is (7 - 2) * 3 + 1?\n" and rows[2]["text"] == tok.decode(long[:width])
    assert rows[0]["key"] != rows[2]["key"]
    for row, prompt, ids in zip(rows, prompts, gen_ids):
        p_ids = tok(prompt)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p_ids + ids])).logits[0].float(), -1)
        expected = np.mean([float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(ids)])
        assert row["confidence"] == pytest.approx(expected, abs=1e-4)


def test_scoring_helpers():
    # The scoring path of a generated example (split, verify, operations, problem key) on known texts.
    good = generate_examples(1, ArithmeticConfig(noise=0.0, min_ops=2, max_ops=2), seed=1)[0]
    prompt, completion = _split_example(good["text"])
    assert verify(prompt, completion) == 1.0
    from qdc_trainer.experiments.self_improve.sampling import _num_ops, _problem_key, _safe_verify

    assert _safe_verify("garbage without a problem\n", "x") == 0.0
    assert _num_ops(prompt) == 2 and _num_ops("no problem here") == 0
    # The key names the problem, not its phrasing.
    from qdc_trainer.tasks.arithmetic import Problem, render

    p = Problem(4, (("+", 3), ("*", 2)))
    assert (
        _problem_key(render(p, 0)[0])
        == _problem_key(render(p, 2)[0])
        != _problem_key(render(Problem(4, (("+", 3),)), 0)[0])
    )


# --------------------------------------------------------------------------- the arms' selection rules


def _candidates(n: int = 120, seed: int = 0) -> list[dict]:
    """Arithmetic examples as sample_examples writes them: some corrupted, with made-up confidences that favour
    one-operation problems (as a model's likelihood does)."""
    from qdc_trainer.experiments.self_improve.sampling import _num_ops, _problem_key

    rng = random.Random(seed)
    rows = []
    for ex in generate_examples(n, ArithmeticConfig(noise=0.3), seed=seed):
        rows.append(
            {
                "prompt": ex["prompt"],
                "completion": ex["completion"],
                "text": ex["text"],
                "valid": verify(ex["prompt"], ex["completion"]),
                "num_ops": _num_ops(ex["prompt"]),
                "key": _problem_key(ex["prompt"]),
                "confidence": -ex["num_ops"] + 0.1 * rng.random(),
            }
        )
    return rows


def test_quality_arm_keeps_the_most_confident_verified():
    cands = _candidates()
    picked = choose("quality", cands, 30)
    valid = sorted((r for r in cands if r["valid"] == 1.0), key=lambda r: -r["confidence"])
    assert [r["prompt"] for r in picked] == [r["prompt"] for r in valid[:30]]
    assert all(r["num_ops"] == 1 for r in picked[:10])  # confidence favours the easy problems
    assert choose("fixed_pool", cands, 30) == picked
    assert len(choose("quality", cands, 10_000)) == len(valid)  # never more than the verified ones


def test_reservoir_arm_mixes_in_the_original_data():
    cands = _candidates()
    original = [dict(r, prompt=f"original {i}") for i, r in enumerate(_candidates(50, seed=9))]
    picked = choose("reservoir", cands, 40, original=original, reservoir_share=0.25, seed=1)
    assert len(picked) == 40
    assert sum(r["prompt"].startswith("original") for r in picked) == 10
    assert [r["prompt"] for r in picked[:30]] == [r["prompt"] for r in choose("quality", cands, 30)]
    with pytest.raises(ValueError, match="original data"):
        choose("reservoir", cands, 40)


def test_qdc_arm_is_verified_distinct_and_balanced():
    cands = _candidates(200)
    cands += [dict(cands[0]) for _ in range(20)]  # a repeated problem
    quality_pick = choose("quality", cands, 50)
    picked = choose("qdc", cands, 50, n_clusters=8, seed=0)
    assert len(picked) == 50
    assert all(verify(r["prompt"], r["completion"]) == 1.0 for r in picked)
    assert len({r["key"] for r in picked}) == 50  # one per problem
    assert {"quality", "complexity", "cluster"} <= set(picked[0])
    # Against the most-confident rule: more complex, more distinct.
    assert np.mean([r["num_ops"] for r in picked]) > np.mean([r["num_ops"] for r in quality_pick]) + 0.5
    assert len({r["key"] for r in quality_pick}) < 50
    assert choose("qdc", [], 5) == []
    with pytest.raises(ValueError, match="arm="):
        choose("best", cands, 5)


def test_star_control_and_replay_arms():
    from qdc_trainer.data import QDCSamplerConfig

    cands = _candidates(200)
    # star selects like qdc (the rule is select_budget); the complexity target pulls the choice down or up.
    low = choose(
        "star", cands, 30, n_clusters=4, seed=0, config=QDCSamplerConfig(complexity_strength=3.0, complexity_target=2.0)
    )
    high = choose(
        "star", cands, 30, n_clusters=4, seed=0, config=QDCSamplerConfig(complexity_strength=3.0, complexity_target=4.0)
    )
    assert all(r["valid"] == 1.0 for r in low + high) and len({r["key"] for r in low}) == 30
    assert np.mean([r["complexity"] for r in low]) < np.mean([r["complexity"] for r in high])
    fresh = _candidates(40, seed=5)
    assert choose("control", cands, 30, fresh=fresh) == [dict(r) for r in fresh[:30]]
    with pytest.raises(ValueError, match="fresh examples"):
        choose("control", cands, 30, fresh=fresh[:10])
    original = _candidates(50, seed=9)
    replay = choose("replay", cands, 20, original=original, seed=3)
    assert len(replay) == 20 and all(r in original for r in replay)
    assert replay == choose("replay", [], 20, original=original, seed=3)  # the candidates play no part


def test_mean_complexity_is_the_scored_column_mean():
    from qdc_trainer.experiments.self_improve import mean_complexity, score_rows

    rows = _candidates(60)
    scored = score_rows(rows, n_clusters=4, seed=0)
    assert mean_complexity(rows) == pytest.approx(np.mean(scored["complexity"][:]))
    # A 2-operation solution: two step lines and the answer line.
    two = [r for r in rows if r["num_ops"] == 2 and r["valid"] == 1.0][0]
    assert mean_complexity([two]) == 3.0


def test_round_data_by_mode():
    from qdc_trainer.experiments.self_improve.rounds import _round_data

    original = [{"i": i} for i in range(4)]
    kept = [{"i": 10}, {"i": 11}]
    assert _round_data("replace", [], kept, 4, 0) == kept
    pool = list(original)
    assert _round_data("accumulate", pool, kept, 4, 0) == original + kept
    assert _round_data("accumulate", pool, [{"i": 12}], 4, 0) == original + kept + [{"i": 12}]
    pool = list(original)
    fixed = _round_data("accumulate_fixed", pool, kept, 4, 0)
    assert len(fixed) == 4 and len(pool) == 6 and all(r in pool for r in fixed)
    assert fixed == _round_data("accumulate_fixed", list(original), kept, 4, 0)  # seeded
    assert _round_data("accumulate_fixed", [{"i": 0}], kept, 4, 0) == [{"i": 0}] + kept  # under the total: all


def test_coverage_by_hand():
    from qdc_trainer.experiments.self_improve import coverage

    # Problem 1: 1 of 8 correct -> pass@1 1/8, pass@8 1; problem 2: none; problem 3: 4 of 8 -> pass@1 1/2.
    verdicts = [[1.0] + [0.0] * 7, [0.0] * 8, [1.0, 0.0] * 4]
    out = coverage(verdicts, 8)
    assert out["pass_at_1"] == pytest.approx((1 / 8 + 0 + 1 / 2) / 3)
    assert out["pass_at_k"] == pytest.approx(2 / 3) and out["never_solved"] == pytest.approx(1 / 3)
    # k = 2 of 8: 1 - C(7,2)/C(8,2) = 1 - 21/28 = 0.25 for problem 1; 1 - C(4,2)/C(8,2) = 1 - 6/28 for problem 3.
    assert coverage(verdicts, 2)["pass_at_k"] == pytest.approx((0.25 + 0 + 22 / 28) / 3)


def test_worker_log_records_reach_the_parent(caplog):
    """A worker process's progress line arrives at the parent's logger of the same name (the CLI prints it)."""
    import logging
    import logging.handlers
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from qdc_trainer.experiments.self_improve.run import PROGRESS_LOGGER, _Forward, _worker_logging

    context = multiprocessing.get_context("spawn")
    records = context.Queue()
    listener = logging.handlers.QueueListener(records, _Forward())
    listener.start()
    name = f"{PROGRESS_LOGGER}.rounds"
    try:
        with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
            with ProcessPoolExecutor(1, mp_context=context, initializer=_worker_logging, initargs=(records, 20)) as p:
                p.submit(logging.getLogger(name).info, "seed %d %s round %d: done", 3, "qdc/accumulate", 2).result()
                p.submit(logging.getLogger(name).debug, "not at INFO").result()
            listener.stop()
            listener = None
    finally:
        if listener is not None:
            listener.stop()
    assert [(r.name, r.getMessage()) for r in caplog.records if r.name == name] == [
        (name, "seed 3 qdc/accumulate round 2: done")
    ]


# --------------------------------------------------------------------------- summary, table, plots


def _rows(collapse: bool) -> list[dict]:
    """Two seeds, rounds 0..2: the quality arm collapses (or not), the QDC arm holds."""
    rows = []
    for seed in (0, 1):
        for arm in ("quality", "qdc"):
            for r in range(3):
                bad = collapse and arm == "quality"
                row = {m: 0.5 for m in METRICS}
                row.update(
                    seed=seed,
                    arm=arm,
                    round=r,
                    valid=0.5 + (0.2 * r if bad else 0.05 * r),
                    data_ops=2.0 - (0.4 * r if bad else 0.0),
                    data_unique=0.9 - (0.3 * r if bad else 0.0),
                    acc_id=0.8 - (0.3 * r if bad else 0.02 * r),
                    acc_ood=0.3 - (0.1 * r if bad else 0.0),
                    detector=int(bad and r >= 1),
                )
                rows.append(row)
    return rows


def test_summary_claims():
    held = summarize(_rows(collapse=True))["claims"]
    assert held["quality_collapses"]["held"] and held["quality_collapses"]["acc_id"] == pytest.approx([0.8, 0.2])
    assert held["qdc_beats_quality_id"]["held"] and held["qdc_beats_quality_id"]["seeds_won"] == "2/2"
    assert held["qdc_beats_quality_ood"]["held"]
    # Accuracy fell 30 points at round 1 and the detector warned at round 1: not the round before.
    early = held["detector_early"]
    assert not early["held"] and len(early["late_or_missed"]) == 2 and not early["false_alarms"]
    not_held = summarize(_rows(collapse=False))["claims"]
    assert not not_held["quality_collapses"]["held"]
    assert not not_held["qdc_beats_quality_id"]["held"]
    assert not not_held["detector_early"]["held"]  # no accuracy drop to detect: nothing to claim


def _curve_rows(variant: str, per_seed: dict[int, list[float]], warned: dict[int, int] | None = None, extra=None):
    """Rows of one variant: in-distribution accuracy per round for each seed, the detector warning from a round."""
    arm, mode = variant.split("/")
    rows = []
    for seed, curve in per_seed.items():
        for r, acc in enumerate(curve):
            row = {m: 0.5 for m in METRICS}
            first = (warned or {}).get(seed)
            row.update(seed=seed, round=r, arm=arm, mode=mode, variant=variant, acc_id=acc, acc_ood=0.2)
            row.update(detector=int(first is not None and r >= first), **(extra or {}).get(r, {}))
            rows.append(row)
    return rows


def test_claims_1_and_2_by_hand():
    five = range(5)
    # qdc/accumulate: +6 points in seeds 0-3, +1 in seed 4 (4 of 5 reach 5 points); OOD stays at 0.2.
    rows = _curve_rows("qdc/accumulate", {s: [0.40, 0.43, 0.46 if s < 4 else 0.41] for s in five})
    rows += _curve_rows("quality/replace", {s: [0.40, 0.30, 0.20] for s in five})
    rows += _curve_rows("quality/accumulate", {s: [0.40, 0.41, 0.40 + 0.06 * (s < 2)] for s in five})
    rows += _curve_rows("control/replace", {s: [0.40, 0.50, 0.60] for s in five})
    claims = summarize(rows)["claims"]
    # 4 of 5 seeds reach 5 points (the old per-seed test passed), but the mean gain, 0.05, has the 95% t interval
    # 0.05 ± 2.776 · 0.02236 / √5 = [0.0222, 0.0778]: it straddles the 5-point threshold, so the claim cannot tell.
    qdc = claims["qdc_improves"]
    assert qdc["seeds_up_5"] == "4/5" and not qdc["held"] and qdc["verdict"] == "inconclusive"
    assert qdc["gain"] == pytest.approx([0.05, 0.0222, 0.0778], abs=1e-4)
    assert qdc["gain_per_seed"][4] == pytest.approx(0.01)
    assert claims["control_rises"]["held"] and claims["control_rises"]["control/replace"]["rises"]
    assert claims["control_rises"]["verdict"] == "held"  # +0.20 in every seed: the interval is [0.20, 0.20]
    # quality/replace lost 20 points (held: below 5 points); quality/accumulate gained 6 points in 2 of 5 seeds,
    # mean 0.024 with the interval [-0.017, 0.065], which contains 0.05: the claim is inconclusive.
    quality = claims["quality_does_not_improve"]
    assert (
        quality["quality/replace"]["verdict"] == "held" and quality["quality/accumulate"]["verdict"] == "inconclusive"
    )
    assert not quality["held"] and quality["verdict"] == "inconclusive"
    assert quality["quality/accumulate"]["seeds_up_5"] == "2/5"
    # Replacing lost 20 points, accumulating lost none: accumulation prevented the collapse.
    assert claims["accumulation_prevents_collapse"]["held"]
    # Beyond the original data alone (replay/accumulate, +3 points in every seed): +3 in seeds 0-3, -2 in seed 4.
    rows += _curve_rows("replay/accumulate", {s: [0.40, 0.42, 0.43] for s in five})
    summary = summarize(rows)
    beyond = summary["claims"]["qdc_improves"]["beyond_replay"]
    # differences 0.03 (4 seeds) and -0.02: mean 0.02, sd 0.02236, the same interval as above shifted: [-0.008, 0.048]
    assert beyond["mean"] == pytest.approx((4 * 0.03 - 0.02) / 5) and beyond["seeds_above"] == "4/5"
    assert beyond["ci"] == pytest.approx([0.02 - 0.0278, 0.02 + 0.0278], abs=1e-4)
    assert beyond["verdict"] == "inconclusive" and beyond["p_sign_flip"] == pytest.approx(
        4 / 32
    )  # only the all-same-sign patterns
    assert "qdc/accumulate +0.020 (4/5) [-0.008, +0.048]" in summary["text"]
    # every seed +9 points: held, whatever the threshold of seeds
    strong = summarize(_curve_rows("qdc/accumulate", {s: [0.40, 0.45, 0.49 + 0.002 * s] for s in five}))
    assert strong["claims"]["qdc_improves"]["verdict"] == "held" and strong["claims"]["qdc_improves"]["held"]
    # every seed +1 point: did not hold (the whole interval is below 5 points)
    weak = summarize(_curve_rows("qdc/accumulate", {s: [0.40, 0.40, 0.41 + 0.002 * s] for s in five}))
    assert weak["claims"]["qdc_improves"]["verdict"] == "did not hold"
    # Three of five seeds up: claim 1 fails; OOD below round 0 fails it too.
    fewer = _curve_rows("qdc/accumulate", {s: [0.40, 0.40, 0.46 if s < 3 else 0.40] for s in five})
    assert not summarize(fewer)["claims"]["qdc_improves"]["held"]
    worse_ood = _curve_rows("qdc/accumulate", {s: [0.40, 0.43, 0.46] for s in five}, extra={2: {"acc_ood": 0.1}})
    claim = summarize(worse_ood)["claims"]["qdc_improves"]
    assert claim["seeds_up_5"] == "5/5" and not claim["ood_not_below"] and not claim["held"]
    assert claim["verdict"] == "did not hold"


def test_detector_claim_by_hand():
    # quality/replace falls 5 points at round 2 in both seeds; seed 0 warned at round 1 (in time), seed 1 at 2.
    quality = {0: [0.5, 0.48, 0.40], 1: [0.5, 0.47, 0.30]}
    late = summarize(_curve_rows("quality/replace", quality, warned={0: 1, 1: 2}))["claims"]["detector_early"]
    assert not late["held"] and len(late["in_time"]) == 1
    assert late["late_or_missed"] == ["quality/replace seed 1 (fell 2, warned 2)"]
    rows = _curve_rows("quality/replace", quality, warned={0: 1, 1: 1})
    assert summarize(rows)["claims"]["detector_early"]["held"]
    # A warning on a variant whose accuracy never falls is a false alarm; a variant that falls may be warned on.
    rows += _curve_rows("qdc/accumulate", {0: [0.5, 0.5, 0.52]}, warned={0: 2})
    claim = summarize(rows)["claims"]["detector_early"]
    assert not claim["held"] and claim["false_alarms"] == ["qdc/accumulate seed 0 (round 2)"]
    rows[-3:] = _curve_rows("qdc/accumulate", {0: [0.5, 0.5, 0.40]}, warned={0: 2})
    assert summarize(rows)["claims"]["detector_early"]["held"]


def test_table_and_plots(tmp_path):
    rows = _rows(collapse=True)
    table, figures = write_results(rows, tmp_path, settings={"rounds": 2})
    text = table.read_text()
    # Round 2 of the quality arm: acc_id 0.2 in both seeds, every seed warned.
    line = next(l for l in text.splitlines() if l.startswith("| 2 | quality/replace |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header = [c.strip() for c in next(l for l in text.splitlines() if l.startswith("| round")).strip("|").split("|")]
    assert cells[header.index("acc_id")] == "0.200 ± 0.000"
    assert cells[header.index("detector")] == "2/2"
    headline = next(l for l in text.splitlines() if l.startswith("| quality/replace |"))
    assert "-0.600, -0.600" in headline  # each seed's change in acc_id
    assert "claim quality_collapses: held" in text and "Settings: `rounds: 2`" in text
    names = {f.name for f in figures}
    assert {"overview.png", "acc_id.png", "valid.png", "data_unique.png", "pass_at_k.png"} <= names
    assert all(f.stat().st_size > 1000 for f in figures)


def test_overview_titles_do_not_overlap(tmp_path, monkeypatch):
    """The overview's panel titles are short and the layout is constrained: no two titles' boxes intersect."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from qdc_trainer.report import figures as report_figures

    captured = {}
    real = report_figures.figure_class

    def spy():
        cls = real()

        class Spy(cls):
            def savefig(self, path, *args, **kwargs):
                captured[str(path)] = self
                return super().savefig(path, *args, **kwargs)

        return Spy

    monkeypatch.setattr(report_figures, "figure_class", spy)
    write_results(_rows(collapse=True), tmp_path)
    fig = captured[str(tmp_path / "overview.png")]
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(boxes) >= 8
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    # Rounds are whole numbers on every x axis.
    for ax in fig.axes:
        if ax.get_visible():
            assert all(float(t).is_integer() for t in ax.get_xticks())


def test_rebuild_is_byte_identical(tmp_path):
    rows = _rows(collapse=True)
    run = tmp_path / "run"
    table, _ = write_results(rows, run, plots=False, settings={"rounds": 2, "budget": 5})
    (run / "results.json").write_text(json.dumps(rows, indent=1))
    (run / "config.json").write_text(json.dumps({"rounds": 2, "budget": 5}, indent=1))
    from qdc_trainer.experiments.self_improve import rebuild

    again, _ = rebuild(run, plots=False, out_dir=tmp_path / "again")
    assert again.read_bytes() == table.read_bytes()


@pytest.mark.parametrize("folder", ["docs/self_improvement", "docs/self_improvement/confirm"])
def test_committed_results_regenerate_from_their_rows(folder, tmp_path):
    """The committed tables are a function of the committed rows and settings: rebuilding gives the same bytes."""
    from qdc_trainer.experiments.self_improve import rebuild

    run = ROOT / folder
    if not (run / "results.json").is_file():
        pytest.skip(f"no committed rows in {folder}")
    table, _ = rebuild(run, plots=False, out_dir=tmp_path)
    assert table.read_bytes() == (run / "results.md").read_bytes()


def test_the_evidence_page_quotes_the_committed_tables():
    """docs/evidence/self_improvement.md holds the committed results' headline and paired tables byte for byte."""
    page = (ROOT / "docs" / "evidence" / "self_improvement.md").read_text()
    for folder in ("docs/self_improvement", "docs/self_improvement/confirm"):
        text = (ROOT / folder / "results.md").read_text()
        sections = text.split("\n## ")
        quoted = [s for s in sections if s.startswith("Round 0 → round") or s.startswith("Paired against")]
        assert quoted, folder
        for section in quoted:
            table = "\n".join(line for line in section.split("\n") if line.startswith("|"))
            assert table and table in page, (folder, section[:40])


# --------------------------------------------------------------------------- configuration


def test_recipe_parses():
    cfg = load_self_improve_config(RECIPE, [])
    assert {("quality", "accumulate"), ("qdc", "accumulate"), ("control", "accumulate")} <= set(cfg.variants())
    assert len(cfg.seeds) >= 5 and cfg.rounds >= 3 and cfg.target_original
    assert cfg.budget < cfg.candidates


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--arms", "quality", "best"], "arms="),
        (["--budget", "5000"], "larger than candidates"),
        (["--seeds", "1", "1"], "seeds="),
        (["--rounds", "0"], "rounds=0"),
        (["--probe_samples", "1"], "probe_samples"),
        (["--reservoir_share", "1.5"], "reservoir_share"),
        (["--roundz", "3"], "did you mean --rounds"),
        (["--rounds", "three"], "invalid int value"),
    ],
)
def test_bad_settings(flags, match):
    with pytest.raises(ConfigError, match=match):
        load_self_improve_config(RECIPE, flags)


def test_arms_in_modes_and_the_sampler_knobs():
    cfg = load_self_improve_config(
        RECIPE,
        ["--arms", "control", "qdc", "quality/accumulate", "--modes", "replace", "accumulate_fixed"]
        + ["--tradeoff", "0.25", "--complexity_target", "2.5", "--target_original", "false"],
    )
    assert cfg.variants() == [
        ("control", "replace"),
        ("control", "accumulate_fixed"),
        ("qdc", "replace"),
        ("qdc", "accumulate_fixed"),
        ("quality", "accumulate"),
    ]
    assert cfg.sampler.tradeoff == 0.25 and cfg.sampler.complexity_target == 2.5
    again = SelfImproveConfig(**dataclasses.asdict(cfg))  # what a worker process rebuilds from
    assert again.sampler == cfg.sampler and again.variants() == cfg.variants()
    with pytest.raises(ConfigError, match="did you mean --seeds"):  # the sampler's seed is the experiment's
        load_self_improve_config(RECIPE, ["--seed", "3"])
    with pytest.raises(ConfigError, match="both set the complexity target"):
        load_self_improve_config(RECIPE, ["--complexity_target", "2.5", "--target_original", "true"])
    with pytest.raises(ConfigError, match="modes="):
        load_self_improve_config(RECIPE, ["--modes", "append"])
    with pytest.raises(ConfigError, match="'qdc/append' is not an arm"):
        load_self_improve_config(RECIPE, ["--arms", "qdc/append"])
    with pytest.raises(ConfigError, match="same arm and mode twice"):
        load_self_improve_config(RECIPE, ["--arms", "qdc", "qdc/replace", "--modes", "replace"])
    with pytest.raises(ConfigError, match="tradeoff"):
        load_self_improve_config(RECIPE, ["--tradeoff", "2"])
    with pytest.raises(ConfigError, match="no known settings"):
        load_self_improve_config(RECIPE, ["--detector_watch", "qdc/gen/nothing"])


def test_smoke_shrinks():
    cfg = SelfImproveConfig(smoke=True)
    assert cfg.rounds == 2 and cfg.candidates < 100 and cfg.seeds == [0]


def test_probes_are_template_openings():
    probes = probe_prompts()
    assert len(probes) == 8 and probes[0] == "What is" and all("{" not in p for p in probes)


# --------------------------------------------------------------------------- a whole run


def _qdc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "qdc"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


VARIANTS = [
    ("quality", "replace"),
    ("qdc", "replace"),
    ("reservoir", "replace"),
    ("fixed_pool", "replace"),
    ("star", "replace"),
    ("control", "replace"),
    ("replay", "replace"),
    ("qdc", "accumulate"),
    ("quality", "accumulate_fixed"),
]


@pytest.mark.slow
def test_smoke_run_through_the_cli(tmp_path):
    """Every arm, every data mode, once, through the console script (CI runs this); then resuming and refusing."""
    out = tmp_path / "run"
    args = [
        "self-improve",
        "--config",
        str(RECIPE),
        "--smoke",
        "true",
        "--output_dir",
        str(out),
        "--workers",
        "1",
        "--target_original",
        "true",
        "--modes",
        "replace",
        "--arms",
        *[a if m == "replace" else f"{a}/{m}" for a, m in VARIANTS],
    ]
    first = _qdc(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "claim quality_collapses" in first.stdout and "claim qdc_beats_quality_id" in first.stdout
    assert "table:" in first.stdout and "seed 0 qdc/accumulate round 2:" in first.stdout  # progress, printed
    rows = json.loads((out / "results.json").read_text())
    assert {(r["arm"], r["mode"], r["round"]) for r in rows} == {(a, m, k) for a, m in VARIANTS for k in range(3)}
    assert all(set(METRICS) <= set(r) and r["variant"] == f"{r['arm']}/{r['mode']}" for r in rows)
    for r in rows:
        assert 0 <= r["pass_at_1"] <= r["pass_at_k"] <= 1 and r["never_solved"] == pytest.approx(1 - r["pass_at_k"])
    # The accumulating pool holds the original data and every round's kept data; replace trains on the kept only.
    size = {(r["variant"], r["round"]): r["data_size"] for r in rows}
    kept = [
        len((out / "seed0" / "qdc" / "accumulate" / f"round{k}_kept.jsonl").read_text().splitlines()) for k in (1, 2)
    ]
    assert size[("qdc/accumulate", 2)] == 64 + sum(kept) and size[("control/replace", 1)] == 16
    assert size[("quality/accumulate_fixed", 2)] <= 64
    assert (out / "results.md").is_file() and (out / "overview.png").is_file() and (out / "acc_id.png").is_file()
    assert (out / "seed0" / "star" / "replace" / "model").is_dir()
    # Round 0 is the same first model in every arm.
    round0 = {
        json.dumps({k: v for k, v in r.items() if k not in ("arm", "mode", "variant", "detector")}, sort_keys=True)
        for r in rows
        if r["round"] == 0
    }
    assert len(round0) == 1
    # The same command again reuses every finished seed and arm.
    again = _qdc(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "results.json").read_text()) == rows
    assert "round 1:" not in again.stdout  # nothing was trained again
    # Fewer arms into the same folder: a run in parts reuses what is there.
    part = _qdc(*args[: args.index("--arms")], "--arms", "control", cwd=tmp_path)
    assert part.returncode == 0 and "round 1:" not in part.stdout
    # --rebuild writes the table again, byte for byte.
    table = (out / "results.md").read_bytes()
    rebuilt = _qdc("self-improve", "--rebuild", str(out), cwd=tmp_path)
    assert rebuilt.returncode == 0 and (out / "results.md").read_bytes() == table
    # Other settings into the same folder are refused, naming what changed.
    changed = _qdc(*args, "--temperature", "0.7", cwd=tmp_path)
    assert changed.returncode == 2 and "temperature" in changed.stderr


# --------------------------------------------------------------------------- --overwrite deletes only its own run


@pytest.fixture
def no_rmtree(monkeypatch):
    """Deleting a whole folder is never right in these tests: fail instead (and delete nothing)."""
    import shutil

    calls = []

    def refuse(path, *args, **kwargs):
        calls.append(path)
        raise AssertionError(f"rmtree({path!r})")

    monkeypatch.setattr(shutil, "rmtree", refuse)
    return calls


def _overwrite(output_dir, capsys) -> tuple[int, str]:
    from qdc_trainer.cli import main

    code = main(
        [
            "self-improve",
            "--config",
            str(RECIPE),
            "--smoke",
            "true",
            "--report",
            "false",
            "--workers",
            "1",
            "--output_dir",
            str(output_dir),
            "--overwrite",
            "true",
        ]
    )
    return code, capsys.readouterr().err


def test_overwrite_refuses_a_folder_it_did_not_write(tmp_path, capsys, no_rmtree, monkeypatch):
    import qdc_trainer.experiments.self_improve.run as si

    monkeypatch.setattr(si, "_run_jobs", lambda *a, **k: pytest.fail("the run started"))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "important.txt").write_text("keep me")
    (folder / "config.json").write_text('{"model_type": "gpt2"}')  # a model folder's config.json is no run marker
    code, err = _overwrite(folder, capsys)
    assert code == 2 and "holds no self-improvement run" in err and "refusing to delete it" in err
    assert (folder / "important.txt").read_text() == "keep me" and not no_rmtree


@pytest.mark.parametrize("where", ["cwd", "parent", "home", "root"])
def test_overwrite_refuses_the_current_folder_its_parents_home_and_root(
    where, tmp_path, capsys, no_rmtree, monkeypatch
):
    import qdc_trainer.experiments.self_improve.run as si

    monkeypatch.setattr(si, "_run_jobs", lambda *a, **k: pytest.fail("the run started"))
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    target = {"cwd": Path("."), "parent": Path(".."), "home": tmp_path / "home", "root": Path("/")}[where]
    if where != "root":  # even a folder holding a run of its own
        (target / "config.json").write_text(json.dumps(dataclasses.asdict(SelfImproveConfig())))
        (target / "important.txt").write_text("keep me")
    code, err = _overwrite(target, capsys)
    assert code == 2 and "never deletes it" in err, err
    assert not no_rmtree
    if where != "root":
        assert (target / "important.txt").is_file() and (target / "config.json").is_file()


def test_overwrite_removes_only_what_its_run_wrote(tmp_path, capsys, monkeypatch):
    import qdc_trainer.experiments.self_improve.run as si

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(si, "_run_jobs", started)
    run = tmp_path / "run"
    (run / "seed0" / "quality").mkdir(parents=True)
    (run / "seed0" / "base.json").write_text("{}")
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(SelfImproveConfig(temperature=0.5))))
    for name in ("results.json", "results.md", "overview.png", "acc_id.png"):
        (run / name).write_text("x")
    (run / "important.txt").write_text("keep me")
    (run / "notes").mkdir()
    with pytest.raises(Started):
        si.run_self_improvement(
            SelfImproveConfig(smoke=True, report=False, workers=1, output_dir=str(run), overwrite=True)
        )
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "important.txt", "notes"]
    assert json.loads((run / "config.json").read_text())["temperature"] == 1.0  # this run's settings


def test_smoke_lets_a_flag_win(tmp_path):
    cfg = load_self_improve_config(RECIPE, ["--smoke", "true", "--rounds", "3"])
    assert cfg.smoke and cfg.rounds == 3 and cfg.candidates == 48  # the flag wins, smoke sets the rest
    with pytest.raises(ConfigError, match="budget=100 is larger than candidates=48"):
        load_self_improve_config(RECIPE, ["--smoke", "true", "--budget", "100"])


def test_an_output_dir_that_is_a_file_is_named(tmp_path, capsys):
    (tmp_path / "run").write_text("not a folder")
    for overwrite in ("false", "true"):
        from qdc_trainer.cli import main

        code = main(
            [
                "self-improve",
                "--config",
                str(RECIPE),
                "--smoke",
                "true",
                "--report",
                "false",
                "--output_dir",
                str(tmp_path / "run"),
                "--overwrite",
                overwrite,
            ]
        )
        assert code == 2 and "is a file, not a folder" in capsys.readouterr().err
        assert (tmp_path / "run").read_text() == "not a folder"
