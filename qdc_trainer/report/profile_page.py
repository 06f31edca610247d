"""The dataset profile page: quality and complexity histograms, cluster sizes, quality against diversity.

The measures behind the quality-diversity plot are pure functions of
:mod:`qdc_trainer.metrics` (:func:`~qdc_trainer.metrics.pareto_frontier`,
:func:`~qdc_trainer.metrics.cluster_quality_diversity`,
:func:`~qdc_trainer.metrics.nearest_neighbor_distances`); this module reads the
columns, draws and writes the page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics.diversity import distinct_n, nearest_neighbor_distances
from ..metrics.tradeoff import cluster_quality_diversity, pareto_frontier
from .figures import COLORS, figure_class, ticker
from .page import escape_html, escape_md, fmt, html_head, html_table, md_table, now

__all__ = ["PROFILE_PAGE", "write_profile_report"]

PROFILE_PAGE = "profile"
"""The page's file name, without ``.html`` / ``.md``."""
MAX_SCATTER_POINTS = 20_000
"""Examples in the per-example quality-diversity plot at most (a seeded random subset above)."""
FRONTIER_ROWS = 12
"""Frontier points listed on the profile page at most."""


def write_profile_report(
    dataset: Any,
    out_dir: str | Path,
    *,
    quality_column: str = "quality",
    complexity_column: str = "complexity",
    cluster_column: str = "cluster",
    text_column: str = "text",
    embeddings: Any = None,
) -> Path:
    """Profile a scored dataset's quality, diversity and complexity on one page; returns ``profile.html``.

    The dataset is a ``datasets.Dataset``, a pandas ``DataFrame`` or a dict of
    lists holding some of the columns that
    :func:`qdc_trainer.metrics.score_dataset` adds (``quality``, ``complexity``,
    ``cluster``) and the text. Written into ``out_dir``: ``profile.html``,
    ``profile.md`` and the figures

    - ``quality_hist.png``, ``complexity_hist.png``: histograms, with the mean and median;
    - ``cluster_sizes.png``: examples per cluster, largest first;
    - ``quality_diversity.png``: quality against diversity with the Pareto frontier
      (the points no other point beats on both) drawn as a line. With
      ``embeddings`` (one row per example) each point is an example and its
      diversity is the cosine distance to its nearest neighbour in the dataset
      (how unlike everything else it is; a random 20,000 examples above that
      size). Otherwise each point is a cluster: its mean quality against the
      distinct-2 of the same number of its texts drawn at random (see
      :func:`cluster_quality_diversity`), sized by the cluster's share of the data.

    The page gives the dataset size, the clusters (number, effective number =
    exp of the entropy of their shares, largest share), summary statistics of
    quality and complexity (mean, standard deviation, 5/25/50/75/95% quantiles,
    extremes), the dataset's distinct-1 and distinct-2, the figures and the
    frontier's points. A missing column skips its figures, and the page says so.

    Args:
        embeddings: optional ``(n, d)`` array, or the name of a column of vectors
            (``score_dataset(..., keep_embeddings=True)`` adds ``embedding``).

    Raises:
        ValueError: none of the four columns is present (the message names them), columns of
            different lengths, or embeddings with the wrong number of rows.
        TypeError: not a table, or a non-numeric quality or complexity column.
        ImportError: matplotlib is missing (``pip install 'qdc-trainer[plot]'``).
    """
    names = _column_names(dataset)
    wanted = {
        "quality": quality_column,
        "complexity": complexity_column,
        "cluster": cluster_column,
        "text": text_column,
    }
    present = {role: col for role, col in wanted.items() if col in names}
    if not present:
        expected = ", ".join(f"{role}_column={col!r}" for role, col in wanted.items())
        raise ValueError(
            f"the dataset has none of the expected columns ({expected}); its columns are {names}. "
            "Score it with qdc_trainer.metrics.score_dataset, or pass the right column names."
        )
    figure_class()
    columns = {role: _column(dataset, col) for role, col in present.items()}
    lengths = {present[role]: len(values) for role, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the columns differ in length: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("the dataset is empty")
    notes = [
        f"column {col!r} not found: {what} skipped"
        for role, col, what in (
            ("quality", quality_column, "quality histogram, statistics and quality-versus-diversity plot"),
            ("complexity", complexity_column, "complexity histogram and statistics"),
            ("cluster", cluster_column, "cluster sizes"),
            ("text", text_column, "distinct-n of the texts"),
        )
        if role not in present
    ]
    quality = _numeric(columns.get("quality"), quality_column, notes)
    complexity = _numeric(columns.get("complexity"), complexity_column, notes)
    clusters = columns.get("cluster")
    texts = None if "text" not in columns else ["" if t is None else str(t) for t in columns["text"]]
    matrix = None
    if embeddings is not None:
        if isinstance(embeddings, str):
            if embeddings not in names:
                raise ValueError(f"embeddings={embeddings!r} is not a column of the dataset (columns: {names})")
            embeddings = _column(dataset, embeddings)
        matrix = np.asarray(embeddings, dtype=np.float64)
        if matrix.ndim != 2 or len(matrix) != n:
            raise ValueError(f"embeddings must have one row per example ({n}), got shape {matrix.shape}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str, str]] = []
    stats: list[list[str]] = [["examples", f"{n:,}"]]
    if quality is not None and np.isfinite(quality).any():
        _plot_histogram(quality, out / "quality_hist.png", "Quality", quality_column)
        figures.append(("quality_hist.png", "Quality", "Distribution of quality, with its mean and median."))
        stats += _describe("quality", quality)
    if complexity is not None and np.isfinite(complexity).any():
        _plot_histogram(complexity, out / "complexity_hist.png", "Complexity", complexity_column)
        figures.append(("complexity_hist.png", "Complexity", "Distribution of complexity, with its mean and median."))
        stats += _describe("complexity", complexity)
    if clusters is not None:
        sizes = Counter(str(c) for c in clusters).most_common()
        shares = np.array([s for _, s in sizes], dtype=np.float64) / n
        stats += [
            ["clusters", str(len(sizes))],
            ["effective number of clusters", fmt(float(np.exp(-(shares * np.log(shares)).sum())))],
            ["largest cluster share", f"{shares[0]:.1%}"],
            ["smallest cluster share", f"{shares[-1]:.1%}"],
        ]
        _plot_cluster_sizes(sizes, out / "cluster_sizes.png", cluster_column)
        figures.append(
            (
                "cluster_sizes.png",
                "Cluster sizes",
                "Examples per cluster, largest first; the dashed line is the size of a perfectly balanced "
                "clustering. The QDC sampler gives small clusters more mass as its trade-off moves to 0.",
            )
        )
    if texts is not None:
        stats += [
            ["distinct-1 of the texts", fmt(distinct_n(texts, 1))],
            ["distinct-2 of the texts", fmt(distinct_n(texts, 2))],
            ["mean words per text", fmt(float(np.mean([len(t.split()) for t in texts])))],
        ]
    frontier_header: list[str] = []
    frontier_rows: list[list[str]] = []
    scatter = _quality_diversity(quality, clusters, texts, matrix, quality_column, notes)
    if scatter is not None:
        _plot_quality_diversity(scatter, out / "quality_diversity.png")
        figures.append(("quality_diversity.png", "Quality versus diversity", scatter["caption"]))
        frontier_header, frontier_rows = scatter["table"]
    page = out / f"{PROFILE_PAGE}.html"
    page.write_text(_profile_html(stats, figures, notes, frontier_header, frontier_rows), encoding="utf-8")
    (out / f"{PROFILE_PAGE}.md").write_text(
        _profile_markdown(stats, figures, notes, frontier_header, frontier_rows), encoding="utf-8"
    )
    return page


def _quality_diversity(
    quality: np.ndarray | None,
    clusters: Sequence[Any] | None,
    texts: list[str] | None,
    matrix: np.ndarray | None,
    quality_column: str,
    notes: list[str],
) -> dict[str, Any] | None:
    """The points of the quality-diversity scatter, its frontier, labels and the frontier table; None to skip."""
    if quality is None:  # the page already says the column is missing
        return None
    if not np.isfinite(quality).any():
        notes.append("no finite quality value: the quality histogram and quality-versus-diversity plot are skipped")
        return None
    if matrix is not None:
        keep = np.flatnonzero(np.isfinite(quality))
        if len(keep) > MAX_SCATTER_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(keep, size=MAX_SCATTER_POINTS, replace=False))
            notes.append(
                f"the quality-versus-diversity plot uses a random {MAX_SCATTER_POINTS:,} examples, "
                "with nearest neighbours among them"
            )
        if len(keep) < 2:
            notes.append("fewer than 2 examples with a quality: the quality-versus-diversity plot is skipped")
            return None
        x = nearest_neighbor_distances(matrix[keep])
        y = quality[keep]
        front = pareto_frontier(x, y)
        rows = [
            [str(keep[i]), fmt(y[i]), fmt(x[i]), _snippet(texts[keep[i]]) if texts else ""]
            for i in front[:FRONTIER_ROWS]
        ]
        return {
            "x": x,
            "y": y,
            "sizes": None,
            "labels": None,
            "front": front,
            "xlabel": "cosine distance to the nearest neighbour (higher = more unlike the rest)",
            "ylabel": quality_column,
            "title": "Quality versus diversity, per example",
            "caption": "Each point is an example: its quality against the cosine distance of its embedding to the "
            "nearest other example. The line joins the Pareto frontier: the examples that no other "
            "example beats on both (the high-quality, non-redundant ones).",
            "table": (["example", "quality", "distance to nearest", "text"], rows),
        }
    if clusters is None or texts is None:
        missing = "cluster" if clusters is None else "text"
        notes.append(
            f"the quality-versus-diversity plot needs embeddings, or the cluster and text columns "
            f"(the {missing} column is missing): skipped"
        )
        return None
    per = cluster_quality_diversity(quality, clusters, texts)
    if len(per["cluster"]) == 0:
        return None
    front = pareto_frontier(per["distinct_2"], per["quality"])
    total = per["size"].sum()
    rows = [
        [str(per["cluster"][i]), str(per["size"][i]), fmt(per["quality"][i]), fmt(per["distinct_2"][i])]
        for i in front[:FRONTIER_ROWS]
    ]
    m = per["max_texts"]
    return {
        "x": per["distinct_2"],
        "y": per["quality"],
        "sizes": per["size"] / total,
        "labels": per["cluster"],
        "front": front,
        "xlabel": f"distinct-2 of {m} texts drawn from the cluster",
        "ylabel": f"mean {quality_column}",
        "title": "Quality versus diversity, per cluster",
        "caption": "Each point is a cluster, its area proportional to the cluster's share of the data: its mean "
        f"quality against the distinct-2 of {m} of its texts drawn at random (the same number for every "
        "cluster, since distinct-n falls as a collection grows; smaller clusters use all theirs). The "
        "line joins the Pareto frontier: the clusters that no other cluster beats on both.",
        "table": (["cluster", "size", "mean quality", "distinct-2"], rows),
    }


def _plot_histogram(values: np.ndarray, path: Path, title: str, column: str) -> Path:
    Figure = figure_class()
    finite = values[np.isfinite(values)]
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    low, high = finite.min(), finite.max()
    if np.all(finite == np.round(finite)) and high - low <= 60:  # whole numbers (steps, words): one bar each
        bins: Any = np.arange(low - 0.5, high + 1.5)
    else:
        bins = min(40, max(len(np.unique(finite)), 1))
    ax.hist(finite, bins=bins, color=COLORS[0], alpha=0.85, edgecolor="white")
    ax.yaxis.set_major_locator(ticker().MaxNLocator(integer=True))
    ax.axvline(finite.mean(), color="black", linestyle="--", linewidth=1.2, label=f"mean {fmt(finite.mean())}")
    ax.axvline(
        np.median(finite), color=COLORS[3], linestyle=":", linewidth=1.6, label=f"median {fmt(np.median(finite))}"
    )
    ax.set_title(f"{title} ({len(finite):,} examples)", fontweight="bold")
    ax.set_xlabel(column)
    ax.set_ylabel("examples")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False)
    fig.savefig(path, dpi=100)
    return path


def _plot_cluster_sizes(sizes: Sequence[tuple[str, int]], path: Path, column: str) -> Path:
    Figure = figure_class()
    k = len(sizes)
    fig = Figure(figsize=(min(14.0, max(6.4, 0.25 * k + 2)), 3.8), layout="constrained")
    ax = fig.subplots()
    counts = [s for _, s in sizes]
    ax.bar(range(k), counts, color=COLORS[0], width=0.8)
    ax.axhline(sum(counts) / k, color="black", linestyle="--", linewidth=1.2, label="balanced size")
    if k <= 40:
        ax.set_xticks(range(k), [c for c, _ in sizes], rotation=90 if k > 12 else 0, fontsize=8)
        ax.set_xlabel(f"{column} (largest first)")
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{k} clusters, largest first")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(ticker().MaxNLocator(integer=True))
    ax.set_title(f"Cluster sizes ({k} clusters)", fontweight="bold")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False)
    fig.savefig(path, dpi=100)
    return path


def _plot_quality_diversity(scatter: Mapping[str, Any], path: Path) -> Path:
    Figure = figure_class()
    x, y, front = scatter["x"], scatter["y"], scatter["front"]
    fig = Figure(figsize=(6.8, 4.8), layout="constrained")
    ax = fig.subplots()
    if scatter["sizes"] is None:
        ax.scatter(x, y, s=8, color=COLORS[0], alpha=0.35, linewidths=0, rasterized=len(x) > 2000, label="examples")
    else:
        ax.scatter(
            x,
            y,
            s=30 + 1500 * scatter["sizes"],
            color=COLORS[0],
            alpha=0.45,
            edgecolors="white",
            label="clusters (area = share)",
        )
    ax.plot(x[front], y[front], color=COLORS[3], linewidth=2, marker="o", markersize=5, label="Pareto frontier")
    if scatter["labels"] is not None and len(x) <= 60:
        for i in front:
            ax.annotate(str(scatter["labels"][i]), (x[i], y[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(scatter["xlabel"])
    ax.set_ylabel(scatter["ylabel"])
    ax.set_title(scatter["title"], fontweight="bold")
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False, loc="lower left")
    fig.savefig(path, dpi=100)
    return path


def _describe(name: str, values: np.ndarray) -> list[list[str]]:
    finite = values[np.isfinite(values)]
    q = np.quantile(finite, [0.05, 0.25, 0.5, 0.75, 0.95])
    return [
        [f"{name}: mean ± std", f"{fmt(finite.mean())} ± {fmt(finite.std())}"],
        [f"{name}: min / max", f"{fmt(finite.min())} / {fmt(finite.max())}"],
        [f"{name}: 5% / 25% / 50% / 75% / 95%", " / ".join(fmt(v) for v in q)],
    ]


def _profile_html(stats, figures, notes, frontier_header, frontier_rows) -> str:
    parts = [
        html_head("QDC dataset profile"),
        "<h1>QDC dataset profile</h1>",
        f"<p class='muted'>Generated {now()}.</p>",
    ]
    parts += [f"<p class='note'>{escape_html(note)}</p>" for note in notes]
    parts += ["<h2>Summary</h2>", html_table(["statistic", "value"], stats)]
    for name, title, caption in figures:
        parts += [
            f"<h2>{escape_html(title)}</h2>",
            f"<p class='caption'>{escape_html(caption)}</p>",
            f"<a href='{escape_html(name)}'><img src='{escape_html(name)}' alt='{escape_html(title)}'></a>",
        ]
    if frontier_rows:
        parts += ["<h3>On the Pareto frontier (highest quality first)</h3>", html_table(frontier_header, frontier_rows)]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _profile_markdown(stats, figures, notes, frontier_header, frontier_rows) -> str:
    parts = ["# QDC dataset profile", "", f"Generated {now()}.", ""]
    parts += [f"- {escape_md(note)}" for note in notes]
    parts += ["", "## Summary", ""] + md_table(["statistic", "value"], stats)
    for name, title, caption in figures:
        parts += ["", f"## {title}", "", escape_md(caption), "", f"![{title}]({name})"]
    if frontier_rows:
        parts += ["", "### On the Pareto frontier (highest quality first)", ""]
        parts += md_table(frontier_header, frontier_rows)
    return "\n".join(parts) + "\n"


def _column_names(data: Any) -> list[str]:
    if hasattr(data, "column_names"):  # datasets.Dataset
        return list(data.column_names)
    if isinstance(data, Mapping):
        return [str(k) for k in data]
    if hasattr(data, "columns"):  # pandas.DataFrame
        return [str(c) for c in data.columns]
    raise TypeError(
        f"dataset must be a datasets.Dataset, a pandas DataFrame or a dict of lists, got {type(data).__name__}"
    )


def _column(data: Any, name: str) -> list:
    values = data[name]
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _numeric(values: list | None, column: str, notes: list[str]) -> np.ndarray | None:
    if values is None:
        return None
    try:
        arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"column {column!r} must hold numbers") from None
    if arr.ndim != 1:
        raise TypeError(f"column {column!r} must hold one number per example, got shape {arr.shape}")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        notes.append(f"{bad:,} value(s) of {column!r} are missing, NaN or infinite and are left out")
    return arr


def _snippet(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
