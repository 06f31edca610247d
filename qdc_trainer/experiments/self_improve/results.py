"""Results of a run: :func:`summarize` (the claims), :func:`write_results` (the Markdown table) and the plots."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import METRICS, TABLE_FILE


def _aggregate(
    rows: Sequence[dict[str, Any]], arm: str, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rounds, mean, min, max) of ``metric`` over seeds for ``arm``."""
    by_round: dict[int, list[float]] = {}
    for r in rows:
        if r.get("arm") == arm and metric in r and r[metric] is not None and math.isfinite(r[metric]):
            by_round.setdefault(r["round"], []).append(float(r[metric]))
    rounds = np.array(sorted(by_round))
    values = [np.array(by_round[k]) for k in rounds]
    return (
        rounds,
        np.array([v.mean() for v in values]),
        np.array([v.min() for v in values]),
        np.array([v.max() for v in values]),
    )


def _first_round(
    rows: Sequence[dict[str, Any]], arm: str, seed: int, test: Callable[[dict[str, Any]], bool]
) -> int | None:
    for r in sorted((r for r in rows if r.get("arm") == arm and r["seed"] == seed), key=lambda r: r["round"]):
        if test(r):
            return r["round"]
    return None


def _first_warnings(rows: Sequence[dict[str, Any]], arm: str, seeds: Sequence[int]) -> dict[int, int | None]:
    """Per seed, the first round in which the arm's collapse detector warned (None: never)."""
    return {s: _first_round(rows, arm, s, lambda r: r.get("detector", 0) >= 1) for s in seeds}


def summarize(rows: Sequence[dict[str, Any]], arms: Sequence[str]) -> dict[str, Any]:
    """Per arm: the first and last round's means over seeds, when the detector warned, and which claims held.

    Claims (each True or False, with the numbers that decide it):

    - ``quality_collapses``: in the quality arm, validity rose while complexity and
      distinctness of the training data and in-distribution accuracy fell (means over seeds);
    - ``qdc_beats_quality_id`` / ``qdc_beats_quality_ood``: the QDC arm ends with the
      higher accuracy, in the mean and in a majority of seeds;
    - ``detector_early``: in every seed whose quality arm lost 5 points of
      in-distribution accuracy, the detector warned no later than that round.
    """
    seeds = sorted({r["seed"] for r in rows})
    last = max(r["round"] for r in rows)
    per_arm: dict[str, dict[str, Any]] = {}
    for arm in arms:
        arm_rows = [r for r in rows if r.get("arm") == arm]
        if not arm_rows:
            continue
        first = {m: _mean(arm_rows, 0, m) for m in METRICS if m != "detector"}
        final = {m: _mean(arm_rows, last, m) for m in METRICS if m != "detector"}
        warned = _first_warnings(rows, arm, seeds)
        per_arm[arm] = {"round_0": first, "final": final, "warned": warned}
    claims: dict[str, Any] = {}
    if "quality" in per_arm:
        q0, qf = per_arm["quality"]["round_0"], per_arm["quality"]["final"]
        claims["quality_collapses"] = {
            "held": bool(
                qf["valid"] > q0["valid"]
                and qf["data_ops"] < q0["data_ops"]
                and qf["data_unique"] < q0["data_unique"]
                and qf["acc_id"] < q0["acc_id"]
            ),
            "valid": [q0["valid"], qf["valid"]],
            "data_ops": [q0["data_ops"], qf["data_ops"]],
            "data_unique": [q0["data_unique"], qf["data_unique"]],
            "acc_id": [q0["acc_id"], qf["acc_id"]],
        }
        drops = {
            s: _first_round(rows, "quality", s, lambda r, s=s: r["acc_id"] < _seed_value(rows, s, 0, "acc_id") - 0.05)
            for s in seeds
        }
        warned = per_arm["quality"]["warned"]
        dropped = {s: d for s, d in drops.items() if d is not None}
        claims["detector_early"] = {
            "held": bool(dropped) and all(warned[s] is not None and warned[s] <= d for s, d in dropped.items()),
            "accuracy_drop_round": drops,
            "warning_round": warned,
        }
    if "quality" in per_arm and "qdc" in per_arm:
        for name, metric in (("qdc_beats_quality_id", "acc_id"), ("qdc_beats_quality_ood", "acc_ood")):
            wins = sum(
                _seed_value(rows, s, last, metric, "qdc") > _seed_value(rows, s, last, metric, "quality") for s in seeds
            )
            q, d = per_arm["quality"]["final"][metric], per_arm["qdc"]["final"][metric]
            claims[name] = {
                "held": bool(d > q and wins > len(seeds) / 2),
                "qdc": d,
                "quality": q,
                "seeds_won": f"{wins}/{len(seeds)}",
            }
    return {
        "arms": per_arm,
        "claims": claims,
        "seeds": seeds,
        "rounds": last,
        "text": _summary_text(per_arm, claims, seeds, last),
    }


def _mean(rows: Sequence[dict[str, Any]], round_: int, metric: str) -> float:
    values = [
        r[metric] for r in rows if r["round"] == round_ and r.get(metric) is not None and math.isfinite(r[metric])
    ]
    return float(np.mean(values)) if values else math.nan


def _seed_value(rows: Sequence[dict[str, Any]], seed: int, round_: int, metric: str, arm: str | None = None) -> float:
    for r in rows:
        if r["seed"] == seed and r["round"] == round_ and (arm is None or r.get("arm") == arm):
            return float(r[metric])
    return math.nan


def _summary_text(per_arm: dict[str, Any], claims: dict[str, Any], seeds: list[int], last: int) -> str:
    lines = [f"Self-improvement: {len(seeds)} seed(s), rounds 0..{last} (means over seeds; round 0 is the first model)"]
    shown = ("valid", "data_ops", "data_unique", "acc_id", "acc_id_ops3", "acc_ood", "across_input_distinct_2")
    lines.append(f"{'arm':<11}" + "".join(f"{m:>26}" for m in shown))
    for arm, info in per_arm.items():
        cells = "".join(f"{_fmt(info['round_0'][m]) + ' -> ' + _fmt(info['final'][m]):>26}" for m in shown)
        lines.append(f"{arm:<11}{cells}")
    for arm, info in per_arm.items():
        warned = ", ".join(
            f"seed {s}: {'round ' + str(w) if w is not None else 'never'}" for s, w in info["warned"].items()
        )
        lines.append(f"detector warned ({arm}): {warned}")
    for name, claim in claims.items():
        detail = {k: v for k, v in claim.items() if k != "held"}
        lines.append(
            f"claim {name}: {'held' if claim['held'] else 'did not hold'} {json.dumps(detail, default=_json_num)}"
        )
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _json_num(value: Any) -> Any:
    return round(float(value), 3) if isinstance(value, (float, np.floating)) else str(value)


HEADLINE_COLUMNS = ("valid", "gen_unique", "data_ops", "acc_id", "acc_id_ops3", "acc_ood")
TABLE_COLUMNS = (
    "valid",
    "gen_ops",
    "gen_unique",
    "data_ops",
    "data_unique",
    "acc_id",
    "acc_id_ops1",
    "acc_id_ops3",
    "acc_ood",
    "per_input_distinct_2",
    "across_input_distinct_2",
    "detector",
)


def write_results(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    arms: Sequence[str],
    plots: bool = True,
    summary: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[Path, list[Path]]:
    """``results.md`` (mean ± std over seeds, per round and arm; the detector column counts seeds that warned)
    and, with ``plots``, one PNG per metric with the arms on the same axes. Returns the table and the figures."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({r["seed"] for r in rows})
    rounds = sorted({r["round"] for r in rows})
    firsts = {arm: _first_warnings(rows, arm, seeds) for arm in arms}
    header = ["round", "arm", *TABLE_COLUMNS]
    last = rounds[-1]
    lines = [
        "# Self-improvement results",
        "",
        f"## Round 0 → round {last}",
        "",
        f"Means over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}): the first model (trained on the original "
        f"data; its data columns describe the original data), then the model after round {last}, ± the standard "
        "deviation between seeds. The last column is the round in which each seed's collapse detector first warned.",
        "",
        "| arm | " + " | ".join(HEADLINE_COLUMNS) + " | detector warned |",
        "|---|" + "---|" * (len(HEADLINE_COLUMNS) + 1),
    ]
    for arm in arms:
        sel = [r for r in rows if r.get("arm") == arm]
        if not sel:
            continue
        cells = []
        for m in HEADLINE_COLUMNS:
            start = _mean(sel, 0, m)
            end = np.array([r[m] for r in sel if r["round"] == last and r.get(m) is not None and math.isfinite(r[m])])
            spread = f" ± {end.std():.2f}" if len(end) > 1 else ""
            cells.append(f"{_fmt(start)} → {_fmt(float(end.mean())) if len(end) else 'n/a'}{spread}")
        warned = firsts[arm].values()
        cells.append(", ".join("–" if w is None else str(w) for w in warned))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every round",
        "",
        "Means over the seeds, ± the standard deviation between seeds. `data_*` describe the data each round "
        "trained on. `detector`: seeds whose collapse detector had warned (or declared collapse) by that round.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for round_ in rounds:
        for arm in arms:
            sel = [r for r in rows if r.get("arm") == arm and r["round"] == round_]
            if not sel:
                continue
            cells = [str(round_), arm]
            for m in TABLE_COLUMNS:
                if m == "detector":
                    warned = sum(firsts[arm][r["seed"]] is not None and firsts[arm][r["seed"]] <= round_ for r in sel)
                    cells.append(f"{warned}/{len(sel)}")
                    continue
                values = np.array([r[m] for r in sel if r.get(m) is not None and math.isfinite(r[m])])
                cells.append(
                    "n/a"
                    if not len(values)
                    else f"{values.mean():.3f}" + (f" ± {values.std():.3f}" if len(values) > 1 else "")
                )
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Columns: " + "; ".join(f"`{m}` {METRICS[m]}" for m in TABLE_COLUMNS), ""]
    if settings:
        lines += ["Settings: " + ", ".join(f"`{k}: {v}`" for k, v in settings.items()), ""]
    if summary is not None:
        lines += ["## Summary", "", "```", summary["text"], "```", ""]
    table = out / TABLE_FILE
    table.write_text("\n".join(lines))
    figures = _plot(rows, out, arms) if plots else []
    return table, figures


def _plot(rows: Sequence[dict[str, Any]], out: Path, arms: Sequence[str]) -> list[Path]:
    from ...report import color, figure_class

    Figure = figure_class()
    figures = []
    metrics = [m for m in METRICS if m != "detector" and any(m in r for r in rows)]
    seeds = sorted({r["seed"] for r in rows})
    firsts = {arm: sorted({w for w in _first_warnings(rows, arm, seeds).values() if w is not None}) for arm in arms}
    grid = Figure(figsize=(16, 3.2 * math.ceil(len(metrics) / 4)))
    axes = grid.subplots(math.ceil(len(metrics) / 4), 4, squeeze=False).ravel()
    for i, metric in enumerate(metrics):
        single = Figure(figsize=(5.5, 3.6))
        for ax in (single.add_subplot(), axes[i]):
            for j, arm in enumerate(arms):
                rounds, mean, lo, hi = _aggregate(rows, arm, metric)
                if not len(rounds):
                    continue
                ax.plot(rounds, mean, marker="o", color=color(j), label=arm)
                ax.fill_between(rounds, lo, hi, color=color(j), alpha=0.15, linewidth=0)
                warned = firsts[arm]
                if warned:  # the first warning round of each seed, on the mean curve
                    ax.scatter(warned, np.interp(warned, rounds, mean), marker="v", s=60, color=color(j), zorder=5)
            ax.set_title(METRICS[metric], fontsize=9)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
        if single.axes[0].get_legend_handles_labels()[0]:
            single.axes[0].legend(fontsize=8)
        single.tight_layout()
        path = out / f"{metric}.png"
        single.savefig(path, dpi=110)
        figures.append(path)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    grid.suptitle("Self-improvement: arms over rounds (mean over seeds, shaded: range; ▼ first detector warning)")
    grid.tight_layout()
    path = out / "overview.png"
    grid.savefig(path, dpi=72)
    figures.insert(0, path)
    return figures
