"""Input contracts of the metrics: strict inputs for model-based measures, shared tokenization, per-text self-BLEU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import build_gpt2, build_gpt2_classifier

from qdc_trainer.metrics import (
    Corpus,
    Embedder,
    JudgeScorer,
    RewardModelScorer,
    VerifierScorer,
    distinct_n,
    ead,
    ngram_entropy,
    score_dataset,
    self_bleu,
    self_bleu_scores,
    sequence_perplexity,
    token_entropy,
)
from qdc_trainer.metrics._inputs import _ASCII_SPACE, _OTHER_SPACE, NUMPY_SPLIT_MIN_CHARS, _dense_ranks, _split_utf8


def test_model_measures_reject_token_ids(tokenizer, tiny_lm):
    with pytest.raises(TypeError, match=r"completions\[0\] is list; model-based measures take strings"):
        sequence_perplexity(tiny_lm, tokenizer, [[4, 25]])


@pytest.mark.parametrize("max_length", [65, 1000])
def test_max_length_beyond_context_is_rejected(tokenizer, tiny_lm, max_length):
    with pytest.raises(ValueError, match=r"exceeds the model's context size \(64\)"):
        sequence_perplexity(tiny_lm, tokenizer, ["the cat sat"], max_length=max_length)
    with pytest.raises(ValueError, match="exceeds the model's context size"):
        JudgeScorer(tiny_lm, tokenizer, max_length=max_length)(["a"], ["b"])


@pytest.mark.parametrize("max_length", [-1, 0, 1, 2.5])
def test_max_length_must_be_a_sensible_int(tokenizer, tiny_lm, max_length):
    with pytest.raises(ValueError, match="max_length must be an int >= 2"):
        sequence_perplexity(tiny_lm, tokenizer, ["the cat sat"], max_length=max_length)


def test_reward_model_empty_pair_is_named(tokenizer):
    rm = build_gpt2_classifier(tokenizer, 1)
    with pytest.raises(ValueError, match="pair 0 encodes to no token"):
        RewardModelScorer(rm, tokenizer)([""], [""])


def test_verifier_rejects_numeric_strings():
    with pytest.raises(TypeError, match="return a bool or a number"):
        VerifierScorer(lambda p, c: "1.5")(["p"], ["c"])


def test_token_entropy_rejects_a_position_without_distribution():
    x = torch.zeros(1, 2, 3)
    x[0, 0] = -torch.inf
    with pytest.raises(ValueError, match="every entry is -inf"):
        token_entropy(x)
    # A single masked-out vocabulary entry is fine: entropy over the remaining two.
    y = torch.zeros(1, 1, 3)
    y[0, 0, 0] = -torch.inf
    assert token_entropy(y).item() == pytest.approx(np.log(2))


def test_keep_embeddings_without_clusters():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["a b", "c d"]})
    out = score_dataset(ds, n_clusters=0, keep_embeddings=True)
    assert "embedding" in out.column_names and "cluster" not in out.column_names
    assert np.allclose(np.linalg.norm(np.asarray(out["embedding"]), axis=1), 1.0)
    assert score_dataset(ds, n_clusters=0).column_names == ["text", "complexity"]


def test_from_transformers_leaves_the_tokenizer_alone():
    from helpers import build_tokenizer

    tok = build_tokenizer()
    tok.pad_token = None
    model = build_gpt2(tok)
    emb = Embedder.from_transformers(model, tok)(["the cat sat", "a dog"])
    assert tok.pad_token is None
    assert emb.shape == (2, 32)


def test_judge_ignores_an_appended_eos(tokenizer, tiny_lm):
    """A tokenizer that appends EOS must not make the judge read the logits after EOS."""

    class AppendsEos:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, text, **kwargs):
            out = dict(self.inner(text, **kwargs))
            if kwargs.get("add_special_tokens", True):
                out["input_ids"] = list(out["input_ids"]) + [self.inner.eos_token_id]
            return out

    plain = JudgeScorer(tiny_lm, tokenizer)(["the cat"], ["sat on the mat"])
    with_eos = JudgeScorer(tiny_lm, AppendsEos(tokenizer))(["the cat"], ["sat on the mat"])
    assert with_eos == pytest.approx(plain)


def test_corpus_is_shared_across_metrics():
    texts = ["the cat sat on the mat", "a dog ran in the park", "the cat sat"]
    corpus = Corpus.from_texts(texts)
    assert distinct_n(corpus, 2) == distinct_n(texts, 2)
    assert ead(corpus, 2, vocab_size=100) == ead(texts, 2, vocab_size=100)
    assert ngram_entropy(corpus, 1) == ngram_entropy(texts, 1)
    assert self_bleu(corpus) == self_bleu(texts)
    with pytest.raises(ValueError, match="at least 2"):
        self_bleu(Corpus.from_texts(["one"]))


def assert_split_like_python(texts: list[str], ids: np.ndarray, offsets: np.ndarray, vocab: int) -> None:
    """The ids and offsets are str.split()'s words: equal words share an id, different words do not."""
    words = [w for t in texts for w in t.split()]
    assert offsets.tolist() == np.cumsum([0] + [len(t.split()) for t in texts]).tolist()
    assert len(ids) == len(words) and vocab == len(set(words))
    assert len(set(zip(words, ids.tolist()))) == vocab and (len(ids) == 0 or 0 <= ids.min() <= ids.max() < vocab)


@pytest.mark.parametrize("seed", range(12))
def test_numpy_split_is_str_split(seed):
    # every ASCII character str.split() treats as whitespace and some others, runs of them at the ends, empty
    # texts, words around the 8-byte chunks of the keys (a 9-byte word shares its first 8 bytes with an 8-byte one)
    rng = np.random.default_rng(seed)
    spaces = [chr(c) for c in (9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0x85, 0xA0, 0x2000, 0x2029, 0x3000)]
    letters = list("ab~\x01\x7f") + ["\u00e9", "\u4e2d", "\U0001f600"]  # 1-, 2-, 3- and 4-byte characters
    texts = []
    for _ in range(int(rng.integers(1, 40))):
        pieces = []
        for _ in range(int(rng.integers(0, 12))):
            pieces.append("".join(rng.choice(letters, int(rng.integers(1, 30)))))
            pieces.append("".join(rng.choice(spaces, int(rng.integers(1, 3)))))
        texts.append("".join(pieces[: len(pieces) - int(rng.integers(0, 2))]))
    # and long words that share their first chunks, or every chunk but a length apart
    texts += ["abababab", "abababab~", "", "   ", "abababab~abababab~ abababab~abababab", "abababab~abababab~~"]
    split = _split_utf8(texts)
    assert split is not None
    assert_split_like_python(texts, *split)


def test_numpy_split_knows_every_whitespace_character_of_str_split():
    splits = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and len(f"a{chr(c)}b".split()) == 2]
    ascii_spaces = [c for c in splits if ord(c) < 128]
    assert np.flatnonzero(_ASCII_SPACE).tolist() == [ord(c) for c in ascii_spaces]
    assert [c for c in splits if ord(c) >= 128] == [chr(c) for c in range(128, 0x110000) if _OTHER_SPACE.match(chr(c))]


def test_numpy_split_leaves_what_it_cannot_split_to_python():
    assert _split_utf8(["a\x00b c"]) is None  # a NUL byte would look like the padding of a short word
    assert _split_utf8(["a\ud800 b"]) is None  # a lone surrogate has no UTF-8
    for odd in (["a\x00b c", "a c"], ["a\ud800 b"]):
        texts = odd * NUMPY_SPLIT_MIN_CHARS
        corpus = Corpus.from_texts(texts)
        assert_split_like_python(texts, corpus.tokens, corpus.offsets, corpus.vocab_size)


def test_dense_ranks_are_equalities_even_when_hashes_collide():
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 1 << 63, 400, dtype=np.uint64)[rng.integers(0, 400, 5000)]
    # a key whose 32-bit hash equals another's: k * golden + 1 shares the high 32 bits (its low 32 are not all 1s)
    golden = 0x9E3779B97F4A7C15
    partner = (int(keys[0]) + pow(golden, -1, 1 << 64)) % (1 << 64)
    assert ((int(keys[0]) * golden) % (1 << 64)) & 0xFFFFFFFF != 0xFFFFFFFF
    assert (int(keys[0]) * golden) % (1 << 64) >> 32 == (partner * golden) % (1 << 64) >> 32
    for case in (keys, np.r_[keys, np.uint64(partner), keys[:3]], keys[:1], keys[:0]):
        ids, n = _dense_ranks(case)
        values, inverse = np.unique(case, return_inverse=True)
        assert n == len(values) and len(set(zip(ids.tolist(), inverse.tolist()))) == n


def test_long_texts_take_the_numpy_split_with_the_same_measures():
    rng = np.random.default_rng(3)
    lexicon = ["the", "answer", "is", "Therefore,", "step-by-step", "42.", "multiplication", "a"]
    texts = [" ".join(rng.choice(lexicon, int(rng.integers(0, 60)))) for _ in range(120)]
    assert sum(map(len, texts)) >= NUMPY_SPLIT_MIN_CHARS
    corpus = Corpus.from_texts(texts)
    assert np.array_equal(corpus.tokens, _split_utf8(texts)[0])  # the NumPy split made it
    assert_split_like_python(texts, corpus.tokens, corpus.offsets, corpus.vocab_size)
    as_lists = [t.split() for t in texts]  # the Python path
    for n in (1, 2, 4):
        assert distinct_n(corpus, n) == distinct_n(as_lists, n)
    assert self_bleu(corpus) == self_bleu(as_lists)


def test_ngram_keys_survive_overflow_of_the_direct_key():
    # 300,000 distinct tokens: V^4 overflows int64, so keys are re-ranked on the way.
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 300_000, size=50_000)
    texts = [toks[i : i + 50].tolist() for i in range(0, len(toks), 50)]
    grams = [tuple(t[i : i + 4]) for t in texts for i in range(len(t) - 3)]
    assert distinct_n(texts, 4) == pytest.approx(len(set(grams)) / len(grams))
    repeated = texts + texts
    assert distinct_n(repeated, 4) == pytest.approx(0.5 * len(set(grams)) / len(grams))


def test_self_bleu_scores_per_text_match_nltk():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    rng = np.random.default_rng(2)
    vocab = [f"w{i}" for i in range(40)]
    texts = [list(rng.choice(vocab, size=rng.integers(0, 25))) for _ in range(30)]
    expected = [
        sentence_bleu([t for j, t in enumerate(texts) if j != i], h, smoothing_function=SmoothingFunction().method1)
        for i, h in enumerate(texts)
    ]
    assert self_bleu_scores(texts) == pytest.approx(np.array(expected), abs=1e-12)
