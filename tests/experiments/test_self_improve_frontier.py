"""Self-improvement at the frontier: pass rates from k samples, the frontier weight, the per-problem cap,
deduplication and the budget's fill, rationalization, equal budgets in every arm, the ``mix`` mode, the headroom
gate and the frontier claims' verdicts, and a smoke run of the recipe through ``qdc self-improve``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from qdc_trainer.cli.recipes import RECIPES_DIR
from qdc_trainer.experiments.self_improve import ARMS, load_self_improve_config
from qdc_trainer.experiments.self_improve.results import (
    NOT_READ,
    frontier_claims,
    frontier_over_solved,
    frontier_over_solved_table,
    frontier_verdict,
    headroom_gate,
    summarize,
    write_results,
)
from qdc_trainer.experiments.self_improve.rounds import _round_data, kept_stats
from qdc_trainer.experiments.self_improve.sampling import (
    choose,
    choose_frontier,
    frontier_weights,
    hinted_prompt,
    pass_rates,
    strip_hint,
    weighted_draw,
)
from qdc_trainer.tasks.arithmetic import verify

ROOT = Path(__file__).resolve().parents[2]
RECIPE = RECIPES_DIR / "arithmetic" / "self_improve_frontier.yaml"


def _problem_rows(verdicts: dict[int, list[int]], texts: dict[int, list[str]] | None = None) -> list[dict]:
    """k samples per problem: problem p's i-th sample has completion texts[p][i] (default ``s<i>``)."""
    rows = []
    for p, vs in verdicts.items():
        for i, v in enumerate(vs):
            completion = texts[p][i] if texts else f"s{i}"
            rows.append({"problem": p, "prompt": f"P{p}\n", "completion": completion, "valid": float(v)})
    return rows


# --------------------------------------------------------------------------- p̂, weights, cap, dedup, fill


def test_pass_rate_is_the_verified_share_of_k_samples():
    rows = _problem_rows({0: [1, 0, 0, 0, 0, 0, 0, 1], 1: [0] * 8, 2: [1] * 8, 3: [1, 1, 1, 0, 0, 0, 0, 0]})
    assert pass_rates(rows) == {0: 0.25, 1: 0.0, 2: 1.0, 3: 0.375}
    # A verdict of 0.5 (never written by the verifier) does not count as verified.
    assert pass_rates([{"problem": 0, "valid": 0.5}, {"problem": 0, "valid": 1.0}]) == {0: 0.5}


def test_frontier_weights_by_hand():
    assert frontier_weights([0.0, 0.125, 0.5, 0.875, 1.0]).tolist() == [0.0, 0.109375, 0.25, 0.109375, 0.0]
    assert frontier_weights([0.0, 0.125, 1.0], "unsolved").tolist() == [1.0, 0.875, 0.0]
    with pytest.raises(ValueError, match="must be one of"):
        frontier_weights([0.5], "hard")
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        frontier_weights([1.5])


def test_weighted_draw_follows_the_weights_and_never_draws_a_zero():
    assert weighted_draw([0.0, 0.0], 2, seed=1) == []
    counts = Counter(weighted_draw([3.0, 1.0, 0.0], 1, seed=s)[0] for s in range(4000))
    assert counts[2] == 0 and 0.72 < counts[0] / 4000 < 0.78  # 3/4 of first draws
    assert weighted_draw([1, 2, 3, 4], 4, seed=5) == weighted_draw([1, 2, 3, 4], 4, seed=5)
    assert sorted(weighted_draw([1, 2, 3, 4], 9, seed=5)) == [0, 1, 2, 3]  # without replacement, at most all


def test_cap_dedup_and_weights_on_a_toy_candidate_list():
    # Problem 0: p̂ = 6/8 with verified texts a, a, b, c, d, e (a twice: one kept), cap 2 keeps a and b.
    # Problem 1: p̂ = 2/8, verified x and y. Problem 2: never solved. Problem 3: always solved (weight 0).
    texts = {
        0: ["a", "a", "b", "c", "d", "e", "f", "g"],
        1: ["x", "z", "y", "z", "z", "z", "z", "z"],
        2: ["n"] * 8,
        3: [f"t{i}" for i in range(8)],
    }
    verdicts = {0: [1, 1, 1, 1, 1, 1, 0, 0], 1: [1, 0, 1, 0, 0, 0, 0, 0], 2: [0] * 8, 3: [1] * 8}
    rows = _problem_rows(verdicts, texts)
    kept = choose_frontier("frontier", rows, 100, per_problem_cap=2, seed=0)
    assert sorted((r["problem"], r["completion"]) for r in kept) == [(0, "a"), (0, "b"), (1, "x"), (1, "y")]
    w = {r["problem"]: r["weight"] for r in kept}
    assert w == {0: pytest.approx(0.75 * 0.25), 1: pytest.approx(0.25 * 0.75)}
    assert {r["problem"]: r["p_hat"] for r in kept} == {0: 0.75, 1: 0.25}
    # unsolved weight: problem 3 (p̂ = 1) still gets weight 0, problem 1 more than problem 0
    kept_u = choose_frontier("frontier", rows, 100, weight="unsolved", per_problem_cap=2)
    assert {r["problem"]: r["weight"] for r in kept_u} == {0: 0.25, 1: 0.75}
    # solved keeps the same deduplicated, capped solutions uniformly, problem 3 included
    solved = choose_frontier("solved", rows, 100, per_problem_cap=2)
    assert sorted((r["problem"], r["completion"]) for r in solved) == [
        (0, "a"),
        (0, "b"),
        (1, "x"),
        (1, "y"),
        (3, "t0"),
        (3, "t1"),
    ]
    assert {r["weight"] for r in solved} == {1.0}
    # A cap of 1 keeps the first verified of each problem.
    capped = choose_frontier("solved", rows, 100, per_problem_cap=1)
    assert sorted((r["problem"], r["completion"]) for r in capped) == [(0, "a"), (1, "x"), (3, "t0")]
    # The same problem drawn twice (problem 3 now states problem 0's prompt): a text already kept is skipped.
    for r in rows[24:]:
        r["prompt"] = "P0\n"
    rows[24]["completion"] = "a"
    again = choose_frontier("solved", rows, 100, per_problem_cap=2)
    assert sorted(r["completion"] for r in again if r["problem"] == 3) == ["t1", "t2"]


def test_budget_draw_is_by_weight_and_filled_from_the_original():
    # 40 problems at p̂ = 1/2 and 40 at p̂ = 1/8 (one verified each): p̂(1 − p̂) = 0.25 against 0.109.
    rows = _problem_rows({p: ([1, 1, 1, 1, 0, 0, 0, 0] if p < 40 else [1, 0, 0, 0, 0, 0, 0, 0]) for p in range(80)})
    picks = [choose_frontier("frontier", rows, 20, per_problem_cap=1, seed=s) for s in range(200)]
    assert all(len(k) == 20 for k in picks)
    share_half = np.mean([sum(r["p_hat"] == 0.5 for r in k) / 20 for k in picks])
    assert 0.63 < share_half < 0.76  # well above the 50% a uniform draw gives
    uniform = np.mean(
        [
            sum(r["p_hat"] == 0.5 for r in choose_frontier("solved", rows, 20, per_problem_cap=1, seed=s)) / 20
            for s in range(200)
        ]
    )
    assert 0.45 < uniform < 0.55
    # Fewer verified than the budget: the shortfall is filled from the original data and marked.
    original = [{"prompt": f"O{i}\n", "completion": "", "valid": 1.0} for i in range(50)]
    few = _problem_rows({0: [1, 0, 0, 0], 1: [1, 1, 0, 0]})
    kept = choose("frontier", few, 10, original=original, fill=True, seed=3)
    # problem 0: p̂ = 1/4, one verified; problem 1: p̂ = 1/2, two verified; 7 rows filled
    assert len(kept) == 10 and sum(r.get("filled", False) for r in kept) == 7
    assert all(r["prompt"].startswith("O") for r in kept if r.get("filled"))
    assert kept_stats("frontier", kept, 25) == {
        "filled": 7,
        "new_share": 3 / 25,
        "kept_p_hat": pytest.approx((0.25 + 0.5 + 0.5) / 3),
        "rationales": 0,
    }
    assert len(choose("frontier", few, 10, original=original, fill=False)) == 3


def test_every_arm_keeps_exactly_the_budget_with_fill():
    original = [
        {"prompt": f"What is {i} + 1?\n", "completion": f"{i} + 1 = {i + 1}\nThe answer is {i + 1}."}
        for i in range(1, 40)
    ]
    original = [dict(r, valid=1.0, confidence=-1.0, num_ops=1, key=str(i)) for i, r in enumerate(original)]
    candidates = [dict(r, problem=i // 4, valid=float(i % 3 == 0)) for i, r in enumerate(original[:24])]
    fresh = [dict(r) for r in original[:30]]
    for arm in ARMS:
        kept = choose(arm, candidates, 20, original=original, fresh=fresh, fill=True, n_clusters=2, seed=1)
        assert len(kept) == 20, arm


# --------------------------------------------------------------------------- rationalization


def test_hint_format_reads_back_as_the_same_problem():
    for prompt in (
        "What is 4 * 3 - 2?\n",
        "Start with 5, add 7, then multiply by 3. What number do you get?\n",
        "Take 5. Subtract 2. Multiply by 4. What is the result?\n",
        "Q: 12 - 3 = ?\n",
    ):
        hinted = hinted_prompt(prompt)
        assert hinted != prompt and hinted.endswith(".\n")
        from qdc_trainer.tasks.arithmetic import build_tokenizer, parse_problem

        assert parse_problem(hinted) == parse_problem(prompt)
        tok = build_tokenizer()
        assert tok.unk_token_id not in tok(hinted).input_ids  # every word of the hint is in the vocabulary


def test_rationalization_keeps_only_verified_rationales_with_the_hint_stripped():
    good = "4 * 3 = 12\n12 - 2 = 10\nThe answer is 10."
    prompt = "What is 4 * 3 - 2?\n"
    other = "What is 2 + 5?\n"
    # Problem 0 never solved, problem 1 solved once in 4.
    candidates = [
        *({"problem": 0, "prompt": prompt, "completion": "The answer is 3.", "valid": 0.0} for _ in range(4)),
        {"problem": 1, "prompt": other, "completion": "2 + 5 = 7\nThe answer is 7.", "valid": 1.0},
        *({"problem": 1, "prompt": other, "completion": "The answer is 6.", "valid": 0.0} for _ in range(3)),
    ]
    hinted = [
        {"prompt": hinted_prompt(prompt), "completion": good},  # right
        {"prompt": hinted_prompt(prompt), "completion": "The answer is 10."},  # copies the answer, no steps
        {"prompt": hinted_prompt(prompt), "completion": good},  # a duplicate
        {"prompt": hinted_prompt(other), "completion": "2 + 5 = 7\nThe answer is 7."},  # p̂ > 0: not rationalized
    ]
    rationales = strip_hint(hinted, [prompt, prompt, prompt, other])
    assert [r["prompt"] for r in rationales] == [prompt, prompt, prompt, other]
    assert [r["valid"] for r in rationales] == [1.0, 0.0, 1.0, 1.0]
    rationales = [dict(r, problem=p) for r, p in zip(rationales, (0, 0, 0, 1))]
    kept = choose_frontier("frontier_rat", candidates, 10, rationales=rationales, per_problem_cap=2)
    rat = [r for r in kept if r["rationale"]]
    assert [(r["prompt"], r["completion"]) for r in rat] == [(prompt, good)]
    assert "answer is 10" not in rat[0]["prompt"] and verify(rat[0]["prompt"], rat[0]["completion"]) == 1.0
    assert rat[0]["weight"] == pytest.approx(0.2 * 0.8)  # as a problem solved once in k + 1 = 5 tries
    assert [r["problem"] for r in kept if not r["rationale"]] == [1]
    # the frontier arm ignores rationales
    plain = choose_frontier("frontier", candidates, 10, rationales=rationales)
    assert not any(r["rationale"] for r in plain)


# --------------------------------------------------------------------------- the mix mode


def test_mix_mode_keeps_the_new_share_and_grows_the_pool():
    pool = [{"i": i} for i in range(100)]
    kept = [{"i": 100 + i} for i in range(20)]
    data = _round_data("mix", pool, kept, 100, seed=0, new_share=0.4)
    assert len(data) == 50 and data[:20] == kept and all(r["i"] < 100 for r in data[20:])
    assert len({r["i"] for r in data[20:]}) == 30 and len(pool) == 120
    assert len(_round_data("mix", [{"i": 0}], kept, 100, seed=0, new_share=0.4)) == 21  # a small pool: all of it


# --------------------------------------------------------------------------- the gate and the claims


def _rows(variant: str, finals: list[float], start: float = 0.5, share: float = 0.4, metric="acc_id") -> list[dict]:
    arm = variant.split("/")[0]
    out = []
    for s, f in enumerate(finals):
        base = {"variant": variant, "arm": arm, "seed": s, "acc_ood": 0.1}
        out.append({**base, "round": 0, "acc_id": start, "pass_at_k": start, "never_solved": 1 - start})
        out.append({**base, "round": 1, "acc_id": f, "pass_at_k": f, "never_solved": 1 - f, "new_share": share})
    return out


def test_the_gate_passes_and_fails_on_hand_made_rows():
    control = _rows("control/mix", [0.60, 0.62, 0.58, 0.61])
    replay = _rows("replay/mix", [0.50, 0.51, 0.49, 0.50], share=0.0)
    gate = headroom_gate(control + replay, "mix")
    # differences 0.10, 0.11, 0.09, 0.11: mean 0.1025, sd 0.009574, se 0.004787 -> 21.41 standard errors
    assert gate["passed"] and gate["standard_errors"] == pytest.approx(21.41, abs=0.01)
    assert gate["replay_gain"][0] == pytest.approx(0.0) and gate["new_share_min"] == 0.4
    # replay not flat: it gains 3 points (the first model was not trained to convergence)
    moving = _rows("replay/mix", [0.53, 0.54, 0.52, 0.53], share=0.0)
    assert not headroom_gate(_rows("control/mix", [0.63, 0.65, 0.61, 0.64]) + moving, "mix")["replay_flat"]
    # too little new data
    thin = headroom_gate(_rows("control/mix", [0.60, 0.62, 0.58, 0.61], share=0.25) + replay, "mix")
    assert not thin["passed"] and not thin["new_share_ok"] and thin["replay_flat"] and thin["headroom"]
    # control above replay by under 3 standard errors: diffs 0.04, -0.02, 0.03, 0.0 (mean 0.0125, sd 0.02754, t 0.91)
    weak = headroom_gate(_rows("control/mix", [0.54, 0.49, 0.52, 0.50]) + replay, "mix")
    assert not weak["passed"] and not weak["headroom"] and weak["standard_errors"] == pytest.approx(0.91, abs=0.01)
    # no control arm
    assert headroom_gate(replay, "mix") == {"passed": False, "reason": "control/mix not run"}


@pytest.mark.parametrize(
    ("low", "high", "mean", "claim", "expected"),
    [
        (0.01, 0.08, 0.045, "gain", "held"),
        (0.001, 0.05, 0.02, "gain", "inconclusive"),  # above 0 but under 3 points
        (-0.01, 0.06, 0.025, "gain", "inconclusive"),
        (-0.03, 0.029, 0.0, "gain", "did not hold"),
        (-0.02, 0.025, 0.0, "not_above", "held"),
        (-0.01, 0.04, 0.015, "not_above", "inconclusive"),
        (0.005, 0.03, 0.017, "not_above", "did not hold"),
        (-0.04, 0.02, -0.01, "not_below", "held"),
        (-0.08, 0.01, -0.03, "not_below", "inconclusive"),
        (-0.09, -0.01, -0.05, "not_below", "did not hold"),
    ],
)
def test_frontier_verdicts(low, high, mean, claim, expected):
    assert frontier_verdict(low, high, mean, claim) == expected


def test_claims_are_not_read_when_the_gate_fails_and_read_when_it_passes():
    control = _rows("control/mix", [0.60, 0.62, 0.58, 0.61])
    replay = _rows("replay/mix", [0.50, 0.51, 0.49, 0.50], share=0.0)
    frontier = _rows("frontier/mix", [0.56, 0.55, 0.54, 0.555])
    solved = _rows("solved/mix", [0.50, 0.52, 0.49, 0.49])
    rows = control + replay + frontier + solved
    claims = frontier_claims(rows, ["control/mix", "replay/mix", "frontier/mix", "solved/mix"])
    assert claims["headroom_gate"]["held"]
    assert claims["frontier_beats_replay"]["verdict"] == "held"
    assert claims["frontier_beats_replay"]["difference"][0] == pytest.approx(0.05125, abs=1e-4)
    assert claims["solved_not_above_replay"]["verdict"] == "held"
    assert claims["frontier_pass_at_k_kept"]["verdict"] == "held"
    assert "frontier_rat_beats_replay" not in claims
    weak = _rows("control/mix", [0.54, 0.49, 0.52, 0.50]) + replay + frontier + solved
    failed = frontier_claims(weak, ["control/mix", "replay/mix", "frontier/mix", "solved/mix"])
    assert not failed["headroom_gate"]["held"]
    assert {failed[n]["verdict"] for n in failed if n != "headroom_gate"} == {NOT_READ}
    assert frontier_claims(control + replay, ["control/mix", "replay/mix"]) == {}


def test_claim_4_frontier_over_solved_over_every_seed_and_the_later_ones_alone():
    frontier = _rows("frontier/mix", [0.56, 0.55, 0.54, 0.555, 0.57, 0.58, 0.53])
    solved = _rows("solved/mix", [0.50, 0.52, 0.49, 0.49, 0.55, 0.50, 0.52])
    result = frontier_over_solved(frontier + solved)
    # differences 0.06, 0.03, 0.05, 0.065, 0.02, 0.08, 0.01: mean 0.045, sd 0.025658, se 0.009698, t(6) 2.4469
    claim = result["claim"]
    assert claim["difference"] == pytest.approx([0.045, 0.0213, 0.0687], abs=1e-4)
    assert (claim["verdict"], claim["seeds"], claim["seeds_above"]) == ("held", "7 (0-6)", "7/7")
    assert not claim["at_most_one_point"]
    later = result["later_seeds"]  # seeds 5 and 6 alone: 0.08 and 0.01
    assert later["seeds"] == "2 (5-6)" and later["difference"][0] == pytest.approx(0.045)
    table = frontier_over_solved_table(result)
    assert "| claim 4: frontier − solved | acc_id | 7 (0-6) | +0.045 [+0.021, +0.069] | " in table
    assert "| frontier − solved, later seeds only | acc_id | 2 (5-6) | +0.045 " in table
    # a difference bounded to under a point is read so; the design's seeds alone have no later-seeds line
    flat = frontier_over_solved(
        _rows("frontier/mix", [0.500, 0.502, 0.499, 0.501]) + _rows("solved/mix", [0.5, 0.5, 0.5, 0.5])
    )
    assert flat["claim"]["verdict"] == "inconclusive" and flat["claim"]["at_most_one_point"]
    assert "later_seeds" not in flat and "at most one point" in frontier_over_solved_table(flat)
    worse = frontier_over_solved(_rows("frontier/mix", [0.45, 0.44, 0.46]) + _rows("solved/mix", [0.5, 0.5, 0.51]))
    assert worse["claim"]["verdict"] == "did not hold"
    with pytest.raises(ValueError, match="no seed ran both"):
        frontier_over_solved(frontier)


def test_the_summary_prints_the_gate_before_any_arm_and_the_table_shows_it(tmp_path):
    rows = (
        _rows("control/mix", [0.54, 0.49, 0.52, 0.50])
        + _rows("replay/mix", [0.50, 0.51, 0.49, 0.50], share=0.0)
        + _rows("frontier/mix", [0.56, 0.55, 0.54, 0.555])
    )
    for r in rows:
        if r["round"]:
            r["filled"] = 0
    text = summarize(rows)["text"].splitlines()
    assert text[1].startswith("headroom gate: FAILED (the selection arms are not read)")
    assert any(line.startswith("claim frontier_beats_replay: not read: gate failed") for line in text)
    table, _ = write_results(rows, tmp_path, plots=False)
    md = table.read_text()
    assert md.index("## Headroom gate: failed") < md.index("## Round 0")
    assert "| frontier_beats_replay | acc_id |" in md and "not read: gate failed |" in md
    assert "## Paired against `replay/mix`" in md and "| filled |" not in md.split("## Every round")[0]
    assert "| filled |" in md.split("## Every round")[1]


# --------------------------------------------------------------------------- the recipe


def test_recipe_parses_with_its_design():
    cfg = load_self_improve_config(RECIPE)
    assert cfg.variants() == [(a, "mix") for a in ("control", "replay", "frontier", "solved", "frontier_rat")]
    assert (cfg.train_sampler, cfg.fill_budget, cfg.solve_k, cfg.per_problem_cap) == ("uniform", True, 8, 2)
    assert cfg.frontier_weight == "variance" and cfg.budget / cfg.new_share >= cfg.budget  # new data >= 30%
    assert cfg.new_share >= 0.3
    text = RECIPE.read_text()
    for claim in ("frontier − replay >= +3 points", "solved (quality-only) − replay is not above 0", "pass@8"):
        assert claim in text


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--new_share", "0"], "new_share"),
        (["--frontier_weight", "hard"], "frontier_weight"),
        (["--train_sampler", "qdc"], "train_sampler"),
        (["--solve_k", "0"], "solve_k"),
        (["--candidates", "4", "--budget", "2"], "solve_k"),
    ],
)
def test_bad_frontier_settings(flags, match):
    from qdc_trainer.cli.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        load_self_improve_config(RECIPE, flags)


@pytest.mark.slow
def test_smoke_run_of_the_frontier_recipe(tmp_path):
    """Every stage of the frontier recipe once, through the console script: equal budgets, the mix mode's data
    size, the frontier rows, the gate printed before the arms."""
    out = tmp_path / "run"
    qdc = Path(sys.executable).with_name("qdc")
    cmd = [str(qdc)] if qdc.is_file() else [sys.executable, "-m", "qdc_trainer.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["self-improve", "--config", str(RECIPE), "--smoke", "true", "--output_dir", str(out), "--report", "false"]
    done = subprocess.run(cmd + args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    gate = next(i for i, line in enumerate(lines) if line.startswith("headroom gate:"))
    assert lines[gate - 1].startswith("Self-improvement:") and lines[gate + 1].startswith("arm/mode")
    assert "claim frontier_beats_replay" in done.stdout and "claim solved_not_above_replay" in done.stdout
    rows = json.loads((out / "results.json").read_text())
    assert {r["variant"] for r in rows} == {
        f"{a}/mix" for a in ("control", "replay", "frontier", "solved", "frontier_rat")
    }
    for r in (r for r in rows if r["round"] >= 1):
        assert r["data_size"] == 40  # 16 kept (the budget, filled if short) are 40% of the round's data
        assert r["new_share"] == pytest.approx((16 - r["filled"]) / 40 if r["arm"] != "replay" else 0.0)
        assert r["arm"] in ("frontier", "solved", "frontier_rat") or r["filled"] == 0
    for arm in ("frontier", "solved", "frontier_rat"):
        for k in (1, 2):
            kept = [
                json.loads(x) for x in (out / "seed0" / arm / "mix" / f"round{k}_kept.jsonl").read_text().splitlines()
            ]
            assert len(kept) == 16
            new = [r for r in kept if not r.get("filled")]
            assert all(r["valid"] == 1.0 and "problem" in r and "The answer is" not in r["prompt"] for r in new)
            assert len({r["prompt"] + r["completion"] for r in new}) == len(new)
            assert max(Counter(r["problem"] for r in new).values(), default=0) <= 2
    assert math.isfinite(json.loads((out / "config.json").read_text())["new_share"])


# --------------------------------------------------------------------------- the committed run

COMMITTED = ROOT / "docs" / "self_improvement" / "frontier"
PAGE = ROOT / "docs" / "evidence" / "self_improvement_frontier.md"


def test_committed_frontier_results_regenerate_from_their_rows(tmp_path):
    """The committed table is a function of the committed rows and settings: rebuilding gives the same bytes."""
    from qdc_trainer.experiments.self_improve import rebuild

    table, _ = rebuild(COMMITTED, plots=False, out_dir=tmp_path)
    assert table.read_bytes() == (COMMITTED / "results.md").read_bytes()


def test_the_committed_run_is_the_recipe_and_the_page_quotes_its_tables():
    """The committed rows are the packaged recipe's run (its settings), and the evidence page holds the gate, the
    headline, the paired and the claims tables of the committed results.md byte for byte."""
    import dataclasses

    from qdc_trainer.experiments.self_improve.config import RUN_SETTINGS_IGNORED

    cfg = load_self_improve_config(RECIPE)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_SETTINGS_IGNORED}
    stored = json.loads((COMMITTED / "config.json").read_text())
    assert stored == json.loads(json.dumps(settings))
    page = PAGE.read_text()
    sections = (COMMITTED / "results.md").read_text().split("\n## ")
    wanted = ("Headroom gate", "Round 0 → round", "Paired against", "Claims at the frontier")
    quoted = [s for s in sections if s.startswith(wanted)]
    assert len(quoted) == 4
    for section in quoted:
        table = "\n".join(line for line in section.split("\n") if line.startswith("|"))
        assert table and table in page, section[:40]


def test_claim_4_rows_are_the_recipe_on_seeds_5_to_19_and_the_page_quotes_its_table(tmp_path):
    """Seeds 5-19 of frontier and solved ran with the recipe's settings (the run folder apart), their table
    rebuilds byte for byte, and the page holds claim 4's table computed from both committed folders."""
    import dataclasses

    from qdc_trainer.experiments.self_improve import rebuild
    from qdc_trainer.experiments.self_improve.config import RUN_SETTINGS_IGNORED

    more = COMMITTED.parent / "frontier_seeds"
    settings = dataclasses.asdict(load_self_improve_config(RECIPE))
    stored = json.loads((more / "config.json").read_text())
    wanted = {k: v for k, v in settings.items() if k not in RUN_SETTINGS_IGNORED and k != "output_dir"}
    assert {k: v for k, v in stored.items() if k != "output_dir"} == json.loads(json.dumps(wanted))
    rows = json.loads((more / "results.json").read_text())
    ran = {(r["variant"], r["seed"]) for r in rows}
    assert ran == {(v, s) for v in ("frontier/mix", "solved/mix") for s in range(5, 20)}
    table, _ = rebuild(more, plots=False, out_dir=tmp_path)
    assert table.read_bytes() == (more / "results.md").read_bytes()
    first = json.loads((COMMITTED / "results.json").read_text())
    result = frontier_over_solved(first + rows)
    assert result["claim"]["verdict"] == "held" and result["claim"]["seeds"] == "20 (0-19)"
    assert frontier_over_solved_table(result) in PAGE.read_text()


@pytest.mark.slow
@pytest.mark.parametrize(("train_sampler", "expected"), [("arm", True), ("uniform", False)])
def test_train_sampler_uniform_trains_the_qdc_arm_uniformly(tmp_path, monkeypatch, train_sampler, expected):
    """``train_sampler: arm`` (the first recipe's design) gives the qdc arm the QDC sampler; ``uniform`` gives no
    arm one, so that selection is the only difference."""
    import qdc_trainer.experiments.self_improve.rounds as rounds
    from qdc_trainer.experiments.self_improve import SelfImproveConfig, run_self_improvement

    calls = []
    monkeypatch.setattr(rounds, "_train", lambda *a, sampler=None, **k: calls.append(sampler))
    cfg = SelfImproveConfig(
        smoke=True,
        arms=["qdc/accumulate", "frontier/mix"],
        train_sampler=train_sampler,
        output_dir=str(tmp_path / "run"),
        report=False,
        workers=1,
    )
    run_self_improvement(cfg)
    # the first model, then two rounds of each arm: qdc's carry the sampler's knobs only with "arm"
    assert calls[0] is None and len(calls) == 5
    assert [c is not None for c in calls[1:]] == [expected, expected, False, False]


def test_rationales_prompt_unsolved_problems_with_the_hint_and_store_them_without_it(monkeypatch):
    """Only problems with p̂ = 0 are prompted again, solve_k times each, with the hint; the rows come back under
    the problem's own prompt and are verified on it."""
    import qdc_trainer.experiments.self_improve.rounds as rounds
    from qdc_trainer.experiments.self_improve import SelfImproveConfig

    asked = []

    def fake_sample(model, tokenizer, prompts, **kwargs):
        asked.extend(prompts)
        good = {"What is 4 * 3 - 2? The answer is 10.\n": "4 * 3 = 12\n12 - 2 = 10\nThe answer is 10."}
        return [{"prompt": p, "completion": good.get(p, "The answer is 10."), "valid": 1.0} for p in prompts]

    monkeypatch.setattr(rounds, "sample_examples", fake_sample)
    cfg = SelfImproveConfig(solve_k=2, candidates=8, budget=2)
    unsolved, solved = "What is 4 * 3 - 2?\n", "What is 2 + 5?\n"
    candidates = [
        {"problem": 0, "prompt": unsolved, "completion": "x", "valid": 0.0},
        {"problem": 0, "prompt": unsolved, "completion": "y", "valid": 0.0},
        {"problem": 1, "prompt": solved, "completion": "2 + 5 = 7\nThe answer is 7.", "valid": 1.0},
        {"problem": 1, "prompt": solved, "completion": "z", "valid": 0.0},
    ]
    rows = rounds._rationales(None, None, cfg, candidates, seed=0)
    assert asked == ["What is 4 * 3 - 2? The answer is 10.\n"] * 2
    assert [(r["problem"], r["prompt"], r["valid"]) for r in rows] == [(0, unsolved, 1.0), (0, unsolved, 1.0)]
    assert rounds._rationales(None, None, cfg, candidates[2:], seed=0) == []
