"""Results of a run: :func:`summarize` (the claims), :func:`write_results` (the Markdown table and the plots) and
:func:`rebuild` (the same files again from a run folder's ``results.json`` and ``config.json``).

Rows are grouped by *variant*, an arm in a data mode (``qdc/accumulate``); a row without ``variant`` (an older
run) is its arm in ``replace`` mode. Everything written here is a function of the rows and the settings alone,
so the committed rows regenerate the committed table byte for byte.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_write, read_json
from ..stats import holm, minimum_detectable_effect, paired_difference, sign_flip_test, verdict
from .config import CONFIG_FILE, METRICS, RESULTS_FILE, TABLE_FILE, TITLES

DROP = 0.05
"""Five points of in-distribution accuracy: what counts as a fall (the detector claim) or a gain (claims 1, 2)."""
SEED_SHARE = 0.8
"""The first registration of claim 1 asked for the gain in this share of the seeds (4 of 5); it is still reported
(``seeds_up_5``), but the claims are read from the 95% interval of the mean gain over seeds."""


def variant_of(row: dict[str, Any]) -> str:
    """The row's variant: ``row["variant"]``, or ``<arm>/replace`` for a row written before data modes existed."""
    return row.get("variant") or f"{row.get('arm')}/replace"


def _variants(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The variants of ``rows`` in the order they first appear."""
    return list(dict.fromkeys(variant_of(r) for r in rows if r.get("arm") is not None))


def _aggregate(
    rows: Sequence[dict[str, Any]], variant: str, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rounds, mean, min, max) of ``metric`` over seeds for ``variant``."""
    by_round: dict[int, list[float]] = {}
    for r in rows:
        if variant_of(r) == variant and _finite(r.get(metric)):
            by_round.setdefault(r["round"], []).append(float(r[metric]))
    rounds = np.array(sorted(by_round))
    values = [np.array(by_round[k]) for k in rounds]
    return (
        rounds,
        np.array([v.mean() for v in values]),
        np.array([v.min() for v in values]),
        np.array([v.max() for v in values]),
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _first_round(
    rows: Sequence[dict[str, Any]], variant: str, seed: int, test: Callable[[dict[str, Any]], bool]
) -> int | None:
    for r in sorted((r for r in rows if variant_of(r) == variant and r["seed"] == seed), key=lambda r: r["round"]):
        if test(r):
            return r["round"]
    return None


def _first_warnings(rows: Sequence[dict[str, Any]], variant: str, seeds: Sequence[int]) -> dict[int, int | None]:
    """Per seed, the first round in which the variant's collapse detector warned (None: never)."""
    return {s: _first_round(rows, variant, s, lambda r: r.get("detector", 0) >= 1) for s in seeds}


def _first_drops(rows: Sequence[dict[str, Any]], variant: str, seeds: Sequence[int]) -> dict[int, int | None]:
    """Per seed, the first round whose in-distribution accuracy is ``DROP`` below round 0's (None: never)."""
    return {
        s: _first_round(rows, variant, s, lambda r, s=s: r["acc_id"] < _value(rows, variant, s, 0, "acc_id") - DROP)
        for s in seeds
    }


def _value(rows: Sequence[dict[str, Any]], variant: str, seed: int, round_: int, metric: str) -> float:
    for r in rows:
        if variant_of(r) == variant and r["seed"] == seed and r["round"] == round_ and _finite(r.get(metric)):
            return float(r[metric])
    return math.nan


def _seeds_of(rows: Sequence[dict[str, Any]], variant: str) -> list[int]:
    return sorted({r["seed"] for r in rows if variant_of(r) == variant})


def _last_round(rows: Sequence[dict[str, Any]], variant: str) -> int:
    return max(r["round"] for r in rows if variant_of(r) == variant)


def _mean(rows: Sequence[dict[str, Any]], variant: str, round_: int, metric: str) -> float:
    values = [r[metric] for r in rows if variant_of(r) == variant and r["round"] == round_ and _finite(r.get(metric))]
    return float(np.mean(values)) if values else math.nan


def gains(rows: Sequence[dict[str, Any]], variant: str, metric: str = "acc_id") -> dict[int, float]:
    """Per seed, ``metric`` at the variant's last round minus round 0.

    >>> rows = [{"variant": "a/replace", "arm": "a", "seed": 0, "round": r, "acc_id": v} for r, v in ((0, .5), (2, .6))]
    >>> {s: round(g, 3) for s, g in gains(rows, "a/replace").items()}
    {0: 0.1}
    """
    last = _last_round(rows, variant)
    return {
        s: _value(rows, variant, s, last, metric) - _value(rows, variant, s, 0, metric)
        for s in _seeds_of(rows, variant)
    }


def summarize(rows: Sequence[dict[str, Any]], variants: Sequence[str] | None = None) -> dict[str, Any]:
    """Per variant: the first and last round's means over seeds and when the detector warned; and the claims.

    Claims (each with ``held`` True or False and the numbers that decide it; the statistical ones also with
    ``verdict``, "held", "did not hold" or "inconclusive", read by :func:`qdc_trainer.experiments.stats.verdict`
    from the 95% t interval of the mean over seeds, ``held`` being ``verdict == "held"``), on the variants present:

    - ``control_rises`` (``control/*``): fresh data of the task lifts the first model in at least one data mode,
      i.e. there is headroom (the mean gain in in-distribution accuracy above ``DROP``; each mode is shown);
    - ``qdc_improves`` (claim 1, ``qdc/accumulate``): the mean gain in in-distribution accuracy from round 0 to
      the last round above ``DROP``, and out-of-distribution accuracy not below round 0 (did not hold when the
      interval of its change lies below 0);
    - ``quality_does_not_improve`` (claim 2, ``quality/replace`` and ``quality/accumulate``): every quality-only
      variant's mean gain below ``DROP`` (did not hold when any is above it); ``accumulation_prevents_collapse``
      says whether accumulating kept the quality-only arm's mean accuracy within ``DROP`` of round 0 where
      replacing did not;
    - ``detector_early`` (claim 3): on every seed of a quality-only variant whose accuracy fell by ``DROP``, the
      detector warned no later than the round before; and it never warned on a seed and variant whose
      accuracy never fell by ``DROP``;
    - ``quality_collapses``, ``qdc_beats_quality_id``, ``qdc_beats_quality_ood`` (replace mode, the first
      experiment's claims): validity up while complexity, distinctness and accuracy fall; the QDC arm ends with
      the higher accuracy (the paired difference over seeds above 0).
    """
    variants = list(variants) if variants is not None else _variants(rows)
    variants = [v for v in variants if any(variant_of(r) == v for r in rows)]
    per_variant: dict[str, dict[str, Any]] = {}
    for v in variants:
        seeds, last = _seeds_of(rows, v), _last_round(rows, v)
        per_variant[v] = {
            "round_0": {m: _mean(rows, v, 0, m) for m in METRICS if m != "detector"},
            "final": {m: _mean(rows, v, last, m) for m in METRICS if m != "detector"},
            "warned": _first_warnings(rows, v, seeds),
            "dropped": _first_drops(rows, v, seeds),
            "acc_id_gain": gains(rows, v),
            "seeds": seeds,
            "last": last,
        }
    claims: dict[str, Any] = {}
    present = set(per_variant)

    def improvement(v: str, claim: str = "above") -> dict[str, Any]:
        g = per_variant[v]["acc_id_gain"]
        up = sum(x >= DROP - 1e-12 for x in g.values())
        gain = paired_difference(list(g.values()))
        ood = paired_difference(list(gains(rows, v, "acc_ood").values()))
        return {
            "verdict": verdict(gain.low, gain.high, DROP, claim),  # type: ignore[arg-type]
            "gain": [round(gain.mean, 4), round(gain.low, 4), round(gain.high, 4)],
            "seeds_up_5": f"{up}/{len(g)}",
            "acc_id": [per_variant[v]["round_0"]["acc_id"], per_variant[v]["final"]["acc_id"]],
            "acc_ood": [per_variant[v]["round_0"]["acc_ood"], per_variant[v]["final"]["acc_ood"]],
            "ood_change": [round(ood.mean, 4), round(ood.low, 4), round(ood.high, 4)],
            "gain_per_seed": {s: round(x, 4) for s, x in g.items()},
        }

    def any_of(verdicts: list[str]) -> str:
        """Some variant held: held; all did not: did not hold; otherwise inconclusive."""
        if "held" in verdicts:
            return "held"
        return "did not hold" if verdicts and all(x == "did not hold" for x in verdicts) else "inconclusive"

    controls = [v for v in variants if v.startswith("control/")]
    if controls:
        detail = {v: improvement(v) for v in controls}
        outcome = any_of([d["verdict"] for d in detail.values()])
        claims["control_rises"] = {
            "held": outcome == "held",
            "verdict": outcome,
            **{
                v: {"rises": d["verdict"] == "held", **{k: d[k] for k in ("verdict", "gain", "acc_id", "seeds_up_5")}}
                for v, d in detail.items()
            },
        }
    if "qdc/accumulate" in present:
        d = improvement("qdc/accumulate")
        ood_ok = verdict(d["ood_change"][1], d["ood_change"][2], 0.0, "below") != "held"
        outcome = d["verdict"] if ood_ok else "did not hold"
        claims["qdc_improves"] = {"held": outcome == "held", **d, "verdict": outcome, "ood_not_below": ood_ok}
        if REPLAY in present:
            claims["qdc_improves"]["beyond_replay"] = beyond(per_variant, "qdc/accumulate")
    quality = [v for v in ("quality/replace", "quality/accumulate") if v in present]
    if quality:
        detail = {v: improvement(v, "below") for v in quality}
        verdicts = [d["verdict"] for d in detail.values()]
        outcome = (
            "held"
            if all(x == "held" for x in verdicts)
            else "did not hold"
            if "did not hold" in verdicts
            else "inconclusive"
        )
        claims["quality_does_not_improve"] = {
            "held": outcome == "held",
            "verdict": outcome,
            **{v: {k: d[k] for k in ("verdict", "gain", "acc_id", "seeds_up_5")} for v, d in detail.items()},
        }
        if len(quality) == 2:
            rep, acc = (detail[v]["acc_id"] for v in quality)
            claims["accumulation_prevents_collapse"] = {
                "held": bool(rep[1] < rep[0] - DROP and acc[1] >= acc[0] - DROP),
                "replace": rep,
                "accumulate": acc,
            }
    if any(v.startswith("quality/") for v in present):
        claims["detector_early"] = _detector_claim(per_variant)
    if "quality/replace" in present:
        q0, qf = per_variant["quality/replace"]["round_0"], per_variant["quality/replace"]["final"]
        claims["quality_collapses"] = {
            "held": bool(
                qf["valid"] > q0["valid"]
                and qf["data_ops"] < q0["data_ops"]
                and qf["data_unique"] < q0["data_unique"]
                and qf["acc_id"] < q0["acc_id"]
            ),
            **{m: [q0[m], qf[m]] for m in ("valid", "data_ops", "data_unique", "acc_id")},
        }
    if {"quality/replace", "qdc/replace"} <= present:
        seeds = sorted(set(per_variant["quality/replace"]["seeds"]) & set(per_variant["qdc/replace"]["seeds"]))
        last = per_variant["qdc/replace"]["last"]
        for name, metric in (("qdc_beats_quality_id", "acc_id"), ("qdc_beats_quality_ood", "acc_ood")):
            mine = [_value(rows, "qdc/replace", s, last, metric) for s in seeds]
            other = [_value(rows, "quality/replace", s, last, metric) for s in seeds]
            wins = sum(a > b for a, b in zip(mine, other))
            diff = paired_difference(mine, other)
            outcome = verdict(diff.low, diff.high)
            q, d = per_variant["quality/replace"]["final"][metric], per_variant["qdc/replace"]["final"][metric]
            claims[name] = {"held": outcome == "held", "verdict": outcome, "qdc": d, "quality": q}
            claims[name]["difference"] = [round(diff.mean, 4), round(diff.low, 4), round(diff.high, 4)]
            claims[name]["seeds_won"] = f"{wins}/{len(seeds)}"
    claims.update(frontier_claims(rows, variants))
    seeds = sorted({r["seed"] for r in rows})
    last = max(r["round"] for r in rows)
    return {
        "arms": per_variant,
        "claims": claims,
        "seeds": seeds,
        "rounds": last,
        "text": _summary_text(per_variant, claims, seeds, last),
    }


REPLAY = "replay/accumulate"
"""The yardstick of the accumulating variants: the same rounds on the original data alone (no new data)."""

FLAT = 0.02
"""The headroom gate's "replay is flat": replay's mean change in in-distribution accuracy over the rounds within
two points of 0 (more training on the original data alone no longer moves the first model)."""
MIN_NEW_SHARE = 0.3
"""The headroom gate: each round's new data is at least this share of what the round trains on (control's)."""
MIN_STANDARD_ERRORS = 3.0
"""The headroom gate: control − replay (final in-distribution accuracy, paired by seed) at least this many
standard errors of the paired difference above 0."""
FRONTIER_GAIN = 0.03
"""Claim 1 at the frontier: frontier − replay at least three points of in-distribution accuracy."""
PASS_MARGIN = 0.05
"""Claim 3 at the frontier: frontier's pass@k not below replay's, read as the interval's lower end above −5 points."""
NOT_READ = "not read: gate failed"
"""The verdict of a selection arm's claim when the headroom gate failed."""


def reference_of(variants: Sequence[str]) -> str | None:
    """The replay yardstick among ``variants``: ``replay/accumulate`` when present, else the first ``replay/*``.

    >>> reference_of(["control/mix", "replay/mix"]), reference_of(["replay/replace", "replay/accumulate"])
    ('replay/mix', 'replay/accumulate')
    """
    if REPLAY in variants:
        return REPLAY
    return next((v for v in variants if v.startswith("replay/")), None)


def _shared_seeds(rows: Sequence[dict[str, Any]], a: str, b: str) -> list[int]:
    return sorted(set(_seeds_of(rows, a)) & set(_seeds_of(rows, b)))


def _final_pairs(
    rows: Sequence[dict[str, Any]], a: str, b: str, metric: str, seeds: Sequence[int] | None = None
) -> tuple[list[float], list[float]]:
    """``metric`` at each variant's last round, on ``seeds`` (default: the seeds both share), in seed order."""
    seeds = _shared_seeds(rows, a, b) if seeds is None else seeds
    la, lb = _last_round(rows, a), _last_round(rows, b)
    return [_value(rows, a, s, la, metric) for s in seeds], [_value(rows, b, s, lb, metric) for s in seeds]


def headroom_gate(rows: Sequence[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Whether the experiment in ``mode`` has room for new data to show, checked before any selection arm is read.

    Three conditions, all needed (``passed``):

    - ``replay_flat``: ``replay/<mode>``'s mean change in in-distribution accuracy from round 0 to its last round
      is within :data:`FLAT` of 0 (the first model was trained until more of the original data changes nothing);
    - ``new_share_ok``: ``control/<mode>``'s new data is at least :data:`MIN_NEW_SHARE` of every round's data
      (the rows' ``new_share``);
    - ``headroom``: control − replay, final in-distribution accuracy paired by seed, is at least
      :data:`MIN_STANDARD_ERRORS` standard errors of the paired difference above 0 (perfect new data does lift
      the model beyond the same training on old data).

    >>> def rows(variant, gains, share=0.4):
    ...     return [{"variant": variant, "arm": variant.split("/")[0], "seed": s, "round": r,
    ...              "acc_id": 0.5 + (g if r else 0.0), "new_share": share}
    ...             for s, g in enumerate(gains) for r in (0, 1)]
    >>> gate = headroom_gate(rows("control/mix", [0.10, 0.12, 0.11]) + rows("replay/mix", [0.0, 0.01, -0.01]), "mix")
    >>> gate["passed"], gate["standard_errors"]
    (True, 19.05)
    >>> headroom_gate(rows("control/mix", [0.10, 0.12, 0.11], 0.2) + rows("replay/mix", [0, 0, 0]), "mix")["passed"]
    False
    """
    control, replay = f"control/{mode}", f"replay/{mode}"
    present = {variant_of(r) for r in rows}
    missing = [v for v in (control, replay) if v not in present]
    if missing:
        return {"passed": False, "reason": f"{' and '.join(missing)} not run"}
    gain = paired_difference(list(gains(rows, replay).values()))
    shares = [r.get("new_share") for r in rows if variant_of(r) == control and r["round"] >= 1]
    share = min((float(x) for x in shares if _finite(x)), default=math.nan)
    mine, ref = _final_pairs(rows, control, replay, "acc_id")
    diff = paired_difference(mine, ref)
    if diff.n < 2:
        errors = math.nan
    elif diff.sd == 0.0:
        errors = math.inf if diff.mean > 0 else 0.0
    else:
        errors = diff.mean / (diff.sd / math.sqrt(diff.n))
    flat = bool(abs(gain.mean) <= FLAT + 1e-12)
    share_ok = bool(_finite(share) and share >= MIN_NEW_SHARE - 1e-12)
    headroom = bool(not math.isnan(errors) and errors >= MIN_STANDARD_ERRORS)
    return {
        "passed": flat and share_ok and headroom,
        "replay_flat": flat,
        "replay_gain": [round(gain.mean, 4), round(gain.low, 4), round(gain.high, 4)],
        "new_share_ok": share_ok,
        "new_share_min": round(share, 4) if _finite(share) else math.nan,
        "headroom": headroom,
        "control_minus_replay": [round(diff.mean, 4), round(diff.low, 4), round(diff.high, 4)],
        "standard_errors": round(errors, 2) if math.isfinite(errors) else errors,
    }


def frontier_verdict(low: float, high: float, mean: float, claim: str) -> str:
    """A frontier claim's verdict from the 95% interval ``[low, high]`` of a paired difference with ``mean``.

    - ``"gain"`` (claim 1): held when the mean is at least :data:`FRONTIER_GAIN` and the interval lies above 0;
      did not hold when the interval lies at or below :data:`FRONTIER_GAIN` (no 3-point gain);
    - ``"not_above"`` (claim 2): held when the interval lies below :data:`FRONTIER_GAIN` (no gain of claim 1's
      size); did not hold when it lies above 0;
    - ``"not_below"`` (claim 3): held when the interval lies above ``−PASS_MARGIN``; did not hold when it lies
      below 0;

    and inconclusive otherwise (:func:`~qdc_trainer.experiments.stats.verdict` reads each side).

    >>> frontier_verdict(0.01, 0.07, 0.04, "gain"), frontier_verdict(0.005, 0.04, 0.02, "gain")
    ('held', 'inconclusive')
    >>> frontier_verdict(-0.04, 0.02, -0.01, "gain"), frontier_verdict(-0.02, 0.02, 0.0, "not_above")
    ('did not hold', 'held')
    >>> frontier_verdict(0.01, 0.05, 0.03, "not_above"), frontier_verdict(-0.04, 0.03, 0.0, "not_below")
    ('did not hold', 'held')
    """
    if claim == "gain":
        if verdict(low, high, 0.0, "above") == "held" and mean >= FRONTIER_GAIN - 1e-12:
            return "held"
        return "did not hold" if verdict(low, high, FRONTIER_GAIN, "above") == "did not hold" else "inconclusive"
    if claim == "not_above":
        if verdict(low, high, 0.0, "above") == "held":
            return "did not hold"
        return "held" if verdict(low, high, FRONTIER_GAIN, "below") == "held" else "inconclusive"
    if claim == "not_below":
        if verdict(low, high, -PASS_MARGIN, "above") == "held":
            return "held"
        return "did not hold" if verdict(low, high, 0.0, "below") == "held" else "inconclusive"
    raise ValueError(f"claim={claim!r} must be 'gain', 'not_above' or 'not_below'")


FRONTIER_CLAIMS = (
    ("frontier_beats_replay", "frontier", "acc_id", "gain"),
    ("solved_not_above_replay", "solved", "acc_id", "not_above"),
    ("frontier_pass_at_k_kept", "frontier", "pass_at_k", "not_below"),
    ("frontier_rat_beats_replay", "frontier_rat", "acc_id", "gain"),
)
"""The claims at the frontier, registered before the runs: (name, arm, measure, reading of
:func:`frontier_verdict`), each arm in the replay yardstick's mode, at the last round, paired by seed."""


def frontier_claims(rows: Sequence[dict[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    """The headroom gate (``headroom_gate``, first) and the frontier claims (:data:`FRONTIER_CLAIMS`) on the
    variants present; empty when no frontier arm ran. Each claim has ``verdict`` (:data:`NOT_READ` when the gate
    failed), ``held`` and the paired difference ``[mean, low, high]`` with its seeds."""
    arms = {v.split("/")[0]: v for v in variants}
    if not any(a in arms for a in ("frontier", "solved", "frontier_rat")):
        return {}
    mode = next(arms[a] for a in ("frontier", "solved", "frontier_rat") if a in arms).split("/")[1]
    gate = headroom_gate(rows, mode)
    out: dict[str, Any] = {
        "headroom_gate": {"held": gate["passed"], "verdict": "held" if gate["passed"] else "did not hold", **gate}
    }
    replay = f"replay/{mode}"
    for name, arm, metric, reading in FRONTIER_CLAIMS:
        variant = f"{arm}/{mode}"
        if variant not in variants or replay not in variants:
            continue
        mine, ref = _final_pairs(rows, variant, replay, metric)
        d = paired_difference(mine, ref)
        outcome = frontier_verdict(d.low, d.high, d.mean, reading) if gate["passed"] else NOT_READ
        out[name] = {
            "held": outcome == "held",
            "verdict": outcome,
            "difference": [round(d.mean, 4), round(d.low, 4), round(d.high, 4)],
            "measure": metric,
            "seeds_above": f"{sum(a > b for a, b in zip(mine, ref))}/{len(mine)}",
        }
    return out


FIRST_SEEDS = 5
"""The frontier design's seeds (0 to 4); claim 4 adds seeds 5 to 19 of `frontier` and `solved`."""


def frontier_over_solved(rows: Sequence[dict[str, Any]], mode: str = "mix") -> dict[str, Any]:
    """Claim 4, registered after the five-seed run and before seeds 5 to 19: ``frontier`` − ``solved`` in
    in-distribution accuracy at the last round, paired by seed over every seed both ran. Held when the 95% t
    interval lies above 0, did not hold when it lies at or below 0, else inconclusive; ``at_most_one_point``
    when its upper end is below +0.01. Beside it, without a claim: the same difference on the seeds after the
    design's (:data:`FIRST_SEEDS`), and the out-of-distribution accuracy and pass@k differences over every seed.
    Each entry is ``[mean, low, high]`` with the seeds and how many of them are above 0."""
    a, b = f"frontier/{mode}", f"solved/{mode}"

    def difference(metric: str, later_only: bool = False) -> dict[str, Any] | None:
        seeds = [s for s in _shared_seeds(rows, a, b) if s >= FIRST_SEEDS or not later_only]
        if not seeds:
            return None
        mine, theirs = _final_pairs(rows, a, b, metric, seeds)
        d = paired_difference(mine, theirs)
        return {
            "difference": [round(d.mean, 4), round(d.low, 4), round(d.high, 4)],
            "p": round(d.p_value, 4),
            "seeds": f"{len(seeds)} ({seeds[0]}-{seeds[-1]})",
            "seeds_above": f"{sum(x > y for x, y in zip(mine, theirs))}/{len(seeds)}",
        }

    claim = difference("acc_id")
    if claim is None:
        raise ValueError(f"no seed ran both {a} and {b}")
    low, high = claim["difference"][1:]
    out = {
        "claim": {**claim, "verdict": verdict(low, high, 0.0, "above"), "at_most_one_point": high < 0.01},
        "later_seeds": difference("acc_id", later_only=True),
        "acc_ood": difference("acc_ood"),
        "pass_at_k": difference("pass_at_k"),
    }
    return {key: value for key, value in out.items() if value is not None}


def frontier_over_solved_table(result: dict[str, Any]) -> str:
    """The Markdown table of :func:`frontier_over_solved`."""
    lines = ["| comparison | measure | seeds | difference [95% CI] | p (t) | seeds above | verdict |", "|---" * 7 + "|"]
    for key, name, measure in (
        ("claim", "claim 4: frontier − solved", "acc_id"),
        ("later_seeds", "frontier − solved, later seeds only", "acc_id"),
        ("acc_ood", "frontier − solved", "acc_ood"),
        ("pass_at_k", "frontier − solved", "pass_at_k"),
    ):
        if key not in result:
            continue
        r = result[key]
        said = r.get("verdict", "(no claim)")
        if r.get("at_most_one_point"):
            said += "; at most one point"
        lines.append(
            f"| {name} | {measure} | {r['seeds']} | {_interval(r['difference'])} | "
            f"{'< 0.001' if r['p'] < 0.001 else format(r['p'], '.3f')} | "
            f"{r['seeds_above']} | {said} |"
        )
    return "\n".join(lines) + "\n"


def beyond(per_variant: dict[str, dict[str, Any]], variant: str, reference: str = REPLAY) -> dict[str, Any]:
    """``variant``'s gain in in-distribution accuracy minus ``reference``'s, paired by seed: what the new data
    added beyond the extra training steps. Mean over the shared seeds, in how many the variant gained more, the
    95% t interval of the mean (``ci``), the paired t test's and the exact sign-flip test's p values, and the
    verdict on "above the reference" read from the interval.

    >>> info = {"a": {"acc_id_gain": {0: 0.10, 1: 0.02}}, "b": {"acc_id_gain": {0: 0.04, 1: 0.04}}}
    >>> out = beyond(info, "a", "b")
    >>> out["mean"], out["seeds_above"], out["verdict"], out["p_sign_flip"]
    (0.02, '1/2', 'inconclusive', 1.0)
    """
    mine, ref = per_variant[variant]["acc_id_gain"], per_variant[reference]["acc_id_gain"]
    seeds = sorted(set(mine) & set(ref))
    diffs = [mine[s] - ref[s] for s in seeds]
    if not diffs:
        return {"mean": math.nan, "seeds_above": "0/0", "verdict": "inconclusive"}
    d = paired_difference(diffs)
    return {
        "mean": round(d.mean, 4),
        "seeds_above": f"{sum(x > 0 for x in diffs)}/{len(diffs)}",
        "ci": [round(d.low, 4), round(d.high, 4)],
        "p_t": round(d.p_value, 4),
        "p_sign_flip": round(sign_flip_test(diffs), 4),
        "verdict": verdict(d.low, d.high),
    }


def _detector_claim(per_variant: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Claim 3 from each variant's first warning and first fall of ``DROP`` per seed."""
    in_time, late, false_alarms = [], [], []
    for v, info in per_variant.items():
        for s in info["seeds"]:
            warned, dropped = info["warned"][s], info["dropped"][s]
            if dropped is None:
                if warned is not None:
                    false_alarms.append(f"{v} seed {s} (round {warned})")
            elif v.startswith("quality/"):
                ok = warned is not None and warned <= dropped - 1
                (in_time if ok else late).append(
                    f"{v} seed {s} (fell {dropped}, warned {'never' if warned is None else warned})"
                )
    return {
        "held": bool(in_time) and not late and not false_alarms,
        "in_time": in_time,
        "late_or_missed": late,
        "false_alarms": false_alarms,
    }


def _summary_text(per_variant: dict[str, Any], claims: dict[str, Any], seeds: list[int], last: int) -> str:
    lines = [f"Self-improvement: {len(seeds)} seed(s), rounds 0..{last} (means over seeds; round 0 is the first model)"]
    if "headroom_gate" in claims:  # checked before any selection arm is read
        gate = {k: v for k, v in claims["headroom_gate"].items() if k not in ("held", "verdict", "passed")}
        outcome = "passed" if claims["headroom_gate"]["held"] else "FAILED (the selection arms are not read)"
        lines.append(f"headroom gate: {outcome} {json.dumps(gate, default=_json_num)}")
    shown = ("valid", "data_ops", "data_unique", "acc_id", "acc_ood", "pass_at_k", "never_solved")
    width = max([22, *(len(v) + 2 for v in per_variant)])
    lines.append(f"{'arm/mode':<{width}}" + "".join(f"{m:>18}" for m in shown))
    for v, info in per_variant.items():
        cells = "".join(f"{_fmt(info['round_0'][m]) + ' -> ' + _fmt(info['final'][m]):>18}" for m in shown)
        lines.append(f"{v:<{width}}{cells}")
    for v, info in per_variant.items():
        warned = ", ".join(f"{s}: {'-' if w is None else w}" for s, w in info["warned"].items())
        fell = ", ".join(f"{s}: {'-' if d is None else d}" for s, d in info["dropped"].items())
        lines.append(f"{v}: detector warned (seed: round) {warned}; acc_id fell 5 points {fell}")
    reference = reference_of(list(per_variant))
    if reference is not None:
        mode = reference.split("/")[1]
        others = [v for v in per_variant if v != reference and v.endswith(f"/{mode}")]
        cells = []
        for v in others:
            b = beyond(per_variant, v, reference)
            ci = b.get("ci", [math.nan, math.nan])
            cells.append(f"{v} {b['mean']:+.3f} ({b['seeds_above']}) [{ci[0]:+.3f}, {ci[1]:+.3f}]")
        lines.append(f"acc_id gain beyond {reference} (paired by seed; seeds above; 95% CI): " + ", ".join(cells))
    names = [n for n in claims if n != "headroom_gate"]
    for name in names:
        claim = claims[name]
        outcome = claim.get("verdict", "held" if claim["held"] else "did not hold")
        detail = {k: v for k, v in claim.items() if k not in ("held", "verdict")}
        lines.append(f"claim {name}: {outcome} {json.dumps(detail, default=_json_num)}")
    return "\n".join(lines)


def _interval(x: Sequence[float]) -> str:
    """``[mean, low, high]`` as ``+m [+l, +h]``."""
    return f"{x[0]:+.3f} [{x[1]:+.3f}, {x[2]:+.3f}]"


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _json_num(value: Any) -> Any:
    return round(float(value), 3) if isinstance(value, (float, np.floating)) else str(value)


HEADLINE_COLUMNS = ("valid", "gen_unique", "data_ops", "acc_id", "acc_ood", "pass_at_1", "pass_at_k", "never_solved")
TABLE_COLUMNS = (
    "valid",
    "gen_ops",
    "gen_unique",
    "data_ops",
    "data_unique",
    "data_size",
    "acc_id",
    "acc_id_ops1",
    "acc_id_ops3",
    "acc_ood",
    "pass_at_1",
    "pass_at_k",
    "never_solved",
    "per_input_distinct_2",
    "across_input_distinct_2",
    "per_input_self_bleu",
    "detector",
)
PLOTTED = (
    "valid",
    "gen_unique",
    "data_ops",
    "data_unique",
    "acc_id",
    "acc_id_ops3",
    "acc_ood",
    "pass_at_1",
    "pass_at_k",
    "never_solved",
    "across_input_distinct_2",
    "per_input_self_bleu",
)
"""The panels of ``overview.png`` (every measurement also gets a PNG of its own)."""


EXTRA_COLUMNS = ("filled", "new_share", "kept_p_hat", "rationales")
"""Columns of the every-round table shown only when the rows have them (runs since equal budgets and the
frontier arms: what a round kept)."""

PAIRED_COLUMNS = ("acc_id", "acc_ood", "pass_at_k", "never_solved")
"""The measures compared with the replay yardstick; ``acc_id`` first, the primary one."""


def _paired_section(rows: Sequence[dict[str, Any]], variants: Sequence[str], reference: str | None = None) -> list[str]:
    """Markdown lines: each variant at its last round minus ``reference``, paired by seed (empty without it).

    In-distribution accuracy gets the paired t interval, the t test's and the exact sign-flip test's p values,
    Holm's adjustment over the variants compared, and the smallest difference the design detects with 80% power;
    the other measures their paired difference with its 95% t interval."""
    reference = reference or reference_of(variants)
    if reference is None or reference not in variants:
        return []
    others = [v for v in variants if v != reference]
    table, p_values = [], []
    for v in others:
        seeds = _shared_seeds(rows, v, reference)
        if len(seeds) < 2:
            continue
        cells = []
        for m in PAIRED_COLUMNS:
            mine, ref = _final_pairs(rows, v, reference, m, seeds)
            d = paired_difference(mine, ref)
            cells.append(d.format())
            if m == "acc_id":
                flips = sign_flip_test([a - b for a, b in zip(mine, ref)])
                mde = minimum_detectable_effect(d.sd, d.n) if d.sd > 0 else 0.0
                cells += [f"{d.p_value:.3f}", f"{flips:.3f}", "", f"{mde:.3f}"]
                p_values.append(d.p_value)
        table.append([v, *cells])
    for row, adjusted in zip(table, holm(p_values)):
        row[4] = f"{adjusted:.3f}"
    names = [f"{m} − replay [95% CI]" for m in PAIRED_COLUMNS]
    return [
        "",
        f"## Paired against `{reference}`",
        "",
        f"Each variant at its last round minus `{reference}` (the same rounds on the original data alone, no new "
        "data) at its last round, paired by seed: the mean difference with its 95% t interval. For "
        "in-distribution accuracy also the paired t test's p value, the exact sign-flip test's (with 5 seeds it "
        "cannot go below 0.0625), the t test's after Holm's correction over the variants compared, and the "
        "smallest difference this design detects with 80% power (two-sided 5%, from the observed spread of the "
        "differences). The round-0 model is shared, so these are also the differences in gain.",
        "",
        f"| arm/mode | {names[0]} | p (t) | p (sign-flip) | p (t, Holm) | detectable (80%) | "
        + " | ".join(names[1:])
        + " |",
        "|---|" + "---|" * (len(PAIRED_COLUMNS) + 4),
        *("| " + " | ".join(row) + " |" for row in table),
    ]


def _gate_section(claims: dict[str, Any]) -> list[str]:
    """Markdown lines: the headroom gate, before any table of the arms (empty when no frontier arm ran)."""
    if "headroom_gate" not in claims:
        return []
    g = claims["headroom_gate"]
    if "reason" in g:
        return ["## Headroom gate: failed", "", f"{g['reason']}: the selection arms are not read.", ""]

    def mark(ok: bool) -> str:
        return "yes" if ok else "**no**"

    return [
        f"## Headroom gate: {'passed' if g['held'] else 'failed'}",
        "",
        "Checked before any selection arm is read; "
        + ("the claims below are read." if g["held"] else "it failed, so the selection arms' claims are not read."),
        "",
        "| condition | needed | measured | met |",
        "|---|---|---|---|",
        f"| replay is flat: Δ acc_id over the rounds [95% CI] | within ±{FLAT:.2f} (mean) | "
        f"{_interval(g['replay_gain'])} | {mark(g['replay_flat'])} |",
        f"| new data's share of each round's data (control, smallest) | ≥ {MIN_NEW_SHARE:.2f} | "
        f"{_fmt(g['new_share_min'])} | {mark(g['new_share_ok'])} |",
        f"| control − replay, final acc_id [95% CI] | ≥ {MIN_STANDARD_ERRORS:.0f} standard errors | "
        f"{_interval(g['control_minus_replay'])}, {g['standard_errors']} SE | {mark(g['headroom'])} |",
        "",
    ]


def _frontier_section(claims: dict[str, Any]) -> list[str]:
    """Markdown lines: the frontier claims with their paired differences and verdicts (empty without them)."""
    names = [n for n, *_ in FRONTIER_CLAIMS if n in claims]
    if not names:
        return []
    lines = [
        "",
        "## Claims at the frontier",
        "",
        "Registered before the runs; each arm minus replay at the last round, paired by seed, with the 95% t "
        f"interval. Claim 1 (and frontier_rat): held when the mean is ≥ +{FRONTIER_GAIN:.2f} with the interval "
        f"above 0, did not hold when the interval lies at or below +{FRONTIER_GAIN:.2f}. Claim 2: held when the "
        f"interval lies below +{FRONTIER_GAIN:.2f}, did not hold when it lies above 0. Claim 3: held when the "
        f"interval lies above −{PASS_MARGIN:.2f}, did not hold when it lies below 0. Otherwise inconclusive.",
        "",
        "| claim | measure | difference [95% CI] | seeds above | verdict |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        c = claims[n]
        lines.append(f"| {n} | {c['measure']} | {_interval(c['difference'])} | {c['seeds_above']} | {c['verdict']} |")
    return lines


def write_results(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    plots: bool = True,
    settings: dict[str, Any] | None = None,
    variants: Sequence[str] | None = None,
) -> tuple[Path, list[Path]]:
    """``results.md`` (round 0 → last round per variant, then every round: mean ± std over seeds; the summary
    and its claims) and, with ``plots``, one PNG per metric and ``overview.png``, the variants on the same axes.
    Returns the table and the figures. The table depends on ``rows`` and ``settings`` only."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants = list(variants) if variants is not None else _variants(rows)
    summary = summarize(rows, variants)
    seeds = sorted({r["seed"] for r in rows})
    rounds = sorted({r["round"] for r in rows})
    firsts = {v: _first_warnings(rows, v, _seeds_of(rows, v)) for v in variants}
    last = rounds[-1]
    lines = ["# Self-improvement results", "", *_gate_section(summary["claims"]), f"## Round 0 → round {last}"]
    lines += [
        "",
        f"Means over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}): the first model (trained on the original "
        f"data; its data columns describe the original data), then the model after round {last}, ± the standard "
        "deviation between seeds. `Δ acc_id` is each seed's change in in-distribution accuracy (round "
        f"{last} minus round 0), first as the mean with its 95% t interval over seeds; the last column is the round "
        "in which each seed's collapse detector first warned.",
        "",
        "| arm/mode | " + " | ".join(HEADLINE_COLUMNS) + " | Δ acc_id [95% CI] | Δ acc_id per seed | detector warned |",
        "|---|" + "---|" * (len(HEADLINE_COLUMNS) + 3),
    ]
    for v in variants:
        sel = [r for r in rows if variant_of(r) == v]
        v_last = _last_round(rows, v)
        cells = []
        for m in HEADLINE_COLUMNS:
            start = _mean(sel, v, 0, m)
            end = np.array([r[m] for r in sel if r["round"] == v_last and _finite(r.get(m))])
            spread = f" ± {end.std():.2f}" if len(end) > 1 else ""
            cells.append(f"{_fmt(start)} → {_fmt(float(end.mean())) if len(end) else 'n/a'}{spread}")
        cells.append(paired_difference(list(gains(rows, v).values())).format())
        cells.append(", ".join(f"{g:+.3f}" for g in gains(rows, v).values()))
        cells.append(", ".join("–" if w is None else str(w) for w in firsts[v].values()))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += _paired_section(rows, variants)
    lines += _frontier_section(summary["claims"])
    columns = TABLE_COLUMNS + tuple(m for m in EXTRA_COLUMNS if any(_finite(r.get(m)) for r in rows))
    lines += [
        "",
        "## Every round",
        "",
        "Means over the seeds, ± the standard deviation between seeds. `data_*` describe the data each round "
        "trained on. `detector`: seeds whose collapse detector had warned (or declared collapse) by that round.",
        "",
        "| round | arm/mode | " + " | ".join(columns) + " |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for round_ in rounds:
        for v in variants:
            sel = [r for r in rows if variant_of(r) == v and r["round"] == round_]
            if not sel:
                continue
            cells = [str(round_), v]
            for m in columns:
                if m == "detector":
                    warned = sum(firsts[v][r["seed"]] is not None and firsts[v][r["seed"]] <= round_ for r in sel)
                    cells.append(f"{warned}/{len(sel)}")
                    continue
                values = np.array([r[m] for r in sel if _finite(r.get(m))])
                digits = 0 if m == "data_size" else 3
                cells.append(
                    "n/a"
                    if not len(values)
                    else f"{values.mean():.{digits}f}" + (f" ± {values.std():.{digits}f}" if len(values) > 1 else "")
                )
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Columns: " + "; ".join(f"`{m}` {METRICS[m]}" for m in columns), ""]
    if settings:
        lines += ["Settings: " + ", ".join(f"`{k}: {v}`" for k, v in settings.items()), ""]
    lines += ["## Summary", "", "```", summary["text"], "```", ""]
    table = out / TABLE_FILE
    with atomic_write(table, encoding="utf-8") as f:
        f.write("\n".join(lines))
    figures = _plot(rows, out, variants) if plots else []
    return table, figures


def rebuild(run_dir: str | Path, *, plots: bool = True, out_dir: str | Path | None = None) -> tuple[Path, list[Path]]:
    """Write ``results.md`` (and with ``plots`` the figures) of a run folder again from its ``results.json`` and
    ``config.json``, into ``out_dir`` (default: the run folder). The table comes out byte-identical to the run's."""
    run = Path(run_dir)
    rows = read_json(run / RESULTS_FILE, "run the experiment again to write it")
    settings = read_json(run / CONFIG_FILE) if (run / CONFIG_FILE).is_file() else None
    return write_results(rows, run if out_dir is None else out_dir, plots=plots, settings=settings)


_MODE_STYLES = {"replace": "-", "accumulate": "--", "accumulate_fixed": ":"}


def _plot(rows: Sequence[dict[str, Any]], out: Path, variants: Sequence[str]) -> list[Path]:
    from ...report.figures import color, figure_class, ticker

    Figure = figure_class()
    arms = list(dict.fromkeys(v.split("/")[0] for v in variants))
    figures = []
    metrics = [m for m in METRICS if m != "detector" and any(_finite(r.get(m)) for r in rows)]
    panels = [m for m in PLOTTED if m in metrics]
    firsts = {
        v: sorted({w for w in _first_warnings(rows, v, _seeds_of(rows, v)).values() if w is not None}) for v in variants
    }
    ncols = 4
    nrows = math.ceil(len(panels) / ncols)
    grid = Figure(figsize=(16, 3.1 * nrows + 1.0), layout="constrained")
    axes = grid.subplots(nrows, ncols, squeeze=False).ravel()

    def draw(ax: Any, metric: str, title_size: int) -> None:
        for v in variants:
            arm, _, mode = v.partition("/")
            rounds, mean, lo, hi = _aggregate(rows, v, metric)
            if not len(rounds):
                continue
            c = color(arms.index(arm))
            ax.plot(rounds, mean, marker="o", markersize=3, color=c, linestyle=_MODE_STYLES.get(mode, "-"), label=v)
            ax.fill_between(rounds, lo, hi, color=c, alpha=0.10, linewidth=0)
            if firsts[v]:  # the first warning round of each seed, on the mean curve
                ax.scatter(firsts[v], np.interp(firsts[v], rounds, mean), marker="v", s=40, color=c, zorder=5)
        ax.set_title(TITLES.get(metric, metric), fontsize=title_size)
        ax.set_xlabel("round", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(ticker().MaxNLocator(integer=True))

    for metric in metrics:
        single = Figure(figsize=(6.0, 4.0), layout="constrained")
        ax = single.add_subplot()
        draw(ax, metric, 10)
        ax.set_ylabel(metric, fontsize=8, color="0.35")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        path = out / f"{metric}.png"
        single.savefig(path, dpi=100)
        figures.append(path)
    for ax, metric in zip(axes, panels):
        draw(ax, metric, 10)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        grid.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), fontsize=9, frameon=False)
    grid.suptitle(
        "Self-improvement: mean over seeds (shaded: range); line style: data mode; ▼ first detector warning",
        fontsize=12,
    )
    path = out / "overview.png"
    grid.savefig(path, dpi=80)
    figures.insert(0, path)
    return figures
