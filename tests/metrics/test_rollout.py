"""Rollout measures against hand-computed values."""

import math

import numpy as np
import pytest

from qdc_trainer.metrics import distinct_n, self_bleu
from qdc_trainer.metrics.rollout import answer_diversity, group, rollout_measures, zero_signal_share


def test_group_splits_consecutive_rows_and_refuses_a_ragged_batch():
    assert group([1, 2, 3, 4, 5, 6], 3) == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="do not split"):
        group([1, 2, 3], 2)
    with pytest.raises(ValueError, match="positive int"):
        group([1], 0)


def test_zero_signal_share_by_hand():
    # groups: [1, 1] equal, [0, 1] signal, [0.5, 0.5 + 1e-12] equal within 1e-8, [nan, 1] one scored: none
    rewards = [1, 1, 0, 1, 0.5, 0.5 + 1e-12, math.nan, 1]
    assert zero_signal_share(rewards, 2) == pytest.approx(3 / 4)


def test_answer_diversity_by_hand():
    completions = ["Answer: 3", "Answer: 3", "Answer: 3", "Answer: 4", "no answer", "nothing", "Answer: 1", "Answer: 2"]

    def answer(text):
        return text.split(": ")[1] if ": " in text else None

    # groups of 4: {3, 4} -> 2/4; {None, 1, 2} -> 3/4
    assert answer_diversity(completions, 4, answer) == pytest.approx((2 / 4 + 3 / 4) / 2)


def test_rollout_measures_by_hand():
    completions = ["a b c", "a b c", "x y z", "x y w"]
    rewards = [1.0, 0.0, 1.0, 1.0]
    m = rollout_measures(completions, rewards, 2, answer=lambda t: t[-1])
    groups = [["a b c", "a b c"], ["x y z", "x y w"]]
    assert m["per_prompt/distinct_2"] == pytest.approx(np.mean([distinct_n(g, 2) for g in groups]))
    # across prompts: the j-th completion of every prompt, averaged over j
    across = [["a b c", "x y z"], ["a b c", "x y w"]]
    assert m["across_prompt/distinct_2"] == pytest.approx(np.mean([distinct_n(g, 2) for g in across]))
    assert m["per_prompt/self_bleu"] == pytest.approx(np.mean([self_bleu(g) for g in groups]))
    assert m["distinct_answers"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert m["zero_signal_share"] == pytest.approx(1 / 2)
    assert m["pass@1"] == pytest.approx(3 / 4)
    assert m["pass@2"] == pytest.approx(1.0)  # both prompts solved at least once


def test_pass_at_k_counts_rewards_at_the_threshold_as_correct():
    m = rollout_measures(["a", "b", "c", "d"], [0.5, 0.4, 0.2, 0.1], 2, success_threshold=0.5)
    # group 1: one of two correct -> pass@1 0.5, pass@2 1; group 2: none
    assert m["pass@1"] == pytest.approx(0.25) and m["pass@2"] == pytest.approx(0.5)
    assert "pass@1" not in rollout_measures(["a", "b", "c", "d"], [0.5, 0.4, 0.2, 0.1], 2, success_threshold=None)


def test_measures_that_do_not_apply_are_left_out():
    one_group = rollout_measures(["a b", "a c"], [1, 0], 2)
    assert "across_prompt/distinct_2" not in one_group and "per_prompt/distinct_2" in one_group
    singles = rollout_measures(["a b", "c d"], [1, 0], 1)
    assert "per_prompt/distinct_2" not in singles and singles["across_prompt/distinct_2"] == pytest.approx(1.0)
    assert "pass@1" in singles and "distinct_answers" not in singles


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="3 completions but 2 rewards"):
        rollout_measures(["a", "b", "c"], [1, 0], 1)


# --------------------------------------------------------------------------- the one-pass implementation


def _reference_rollout_text_measures(completions, k):
    """The measures as they were computed before the one-pass implementation: each group and each
    across-prompt collection on its own, with the public metrics."""
    from qdc_trainer.metrics import grouped_diversity

    groups = [completions[i : i + k] for i in range(0, len(completions), k)]
    out = {}
    if k >= 2 and len(groups) >= 2:
        for name, metric in (("distinct_2", lambda t: distinct_n(t, 2)), ("self_bleu", self_bleu)):
            both = grouped_diversity(groups, metric)
            out[f"per_prompt/{name}"], out[f"across_prompt/{name}"] = both.per_input, both.across_input
    elif k >= 2:
        out["per_prompt/distinct_2"] = distinct_n(groups[0], 2)
        out["per_prompt/self_bleu"] = self_bleu(groups[0])
    elif len(groups) >= 2:
        out["across_prompt/distinct_2"] = distinct_n(completions, 2)
        out["across_prompt/self_bleu"] = self_bleu(completions)
    return out


def _random_batch(rng, n_groups, k, vocab, max_words):
    texts = []
    for _ in range(n_groups):
        base = rng.integers(0, vocab, max_words)
        for _ in range(k):
            words = base.copy()
            mutate = rng.random(max_words) < 0.4
            words[mutate] = rng.integers(0, vocab, int(mutate.sum()))
            texts.append(" ".join(f"w{w}" for w in words[: rng.integers(0, max_words + 1)]))
    return texts


@pytest.mark.parametrize("seed", range(40))
def test_rollout_text_measures_equal_the_per_collection_computation_exactly(seed):
    rng = np.random.default_rng(seed)
    n_groups, k = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    if n_groups == 1 and k == 1:
        k = 2
    texts = _random_batch(rng, n_groups, k, vocab=int(rng.integers(1, 12)), max_words=int(rng.integers(0, 14)))
    got = rollout_measures(texts, np.zeros(len(texts)), k)
    want = _reference_rollout_text_measures(texts, k)
    assert {key: got[key] for key in want} == want  # bit for bit
    assert set(got) - set(want) == {"zero_signal_share", "pass@1"} | ({f"pass@{k}"} if k > 1 else set())


def test_rollout_measures_at_grpo_scale_equal_the_reference():
    rng = np.random.default_rng(7)
    texts = _random_batch(rng, 8, 16, vocab=300, max_words=200)
    got = rollout_measures(texts, np.ones(len(texts)), 16)
    want = _reference_rollout_text_measures(texts, 16)
    assert {key: got[key] for key in want} == want


def test_token_id_completions_are_measured_as_token_sequences():
    ids = [np.array([1, 2, 3]), np.array([1, 2, 4]), [5, 6], [5, 6]]
    m = rollout_measures(ids, [1, 0, 1, 0], 2)
    as_words = rollout_measures(["1 2 3", "1 2 4", "5 6", "5 6"], [1, 0, 1, 0], 2)
    assert m == as_words


def test_conversational_completions_are_measured_on_their_contents():
    def chat(text):
        return [{"role": "assistant", "content": text}]

    texts = ["a b c", "a b d", "x y", "x y"]
    m = rollout_measures([chat(t) for t in texts], [1, 0, 1, 0], 2, answer=lambda t: t[-1])
    assert m == rollout_measures(texts, [1, 0, 1, 0], 2, answer=lambda t: t[-1])
    # str() of the message dicts would have counted "{'role':" and "'assistant'," as words
    assert m["per_prompt/distinct_2"] == pytest.approx((3 / 4 + 1 / 2) / 2)  # {ab, bc, bd} of 4; {xy} of 2


def test_an_empty_batch_raises_a_clear_error():
    with pytest.raises(ValueError, match="no completions"):
        rollout_measures([], [], 2)


def test_a_failing_answer_extractor_counts_as_no_answer_and_keeps_the_other_measures(caplog):
    from transformers.utils import logging as hf_logging

    def answer(text):
        if text == "boom":
            raise RuntimeError("cannot parse")
        if text == "list":
            return ["unhashable"]
        return text

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            m = rollout_measures(["boom", "list", "a", "a"], [1, 0, 1, 1], 2, answer=answer)
            rollout_measures(["boom", "boom", "a", "b"], [1, 0, 1, 1], 2, answer=answer)
    finally:
        hf_logging.disable_propagation()
    # group 1: both count as "no answer" -> one distinct answer of two; group 2: one of two
    assert m["distinct_answers"] == pytest.approx(0.5)
    assert "per_prompt/self_bleu" in m and m["pass@1"] == pytest.approx(0.75)
    warnings = [r for r in caplog.records if "failed on a completion" in r.getMessage()]
    assert len(warnings) == 1


def test_the_rollout_monitor_keeps_its_series_when_the_answer_extractor_fails():
    from qdc_trainer.callbacks.rollout import PREFIX, RolloutMonitorCallback
    from qdc_trainer.grpo import Rollouts

    def answer(text):
        raise ValueError("no answer format")

    cb = RolloutMonitorCallback(answer=answer)
    cb.observe(Rollouts(["p"] * 4, ["a b", "a c", "d e", "d e"], np.array([1.0, 0.0, 1.0, 1.0]), 2, None, 0))
    record = cb.collect()[-1]
    assert cb.failures == 0
    assert record[PREFIX + "distinct_answers"] == pytest.approx(0.5)  # every completion: "no answer"
    assert record[PREFIX + "per_prompt/distinct_2"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert record[PREFIX + "pass@2"] == pytest.approx(1.0)


def test_token_id_arrays_give_the_measures_of_their_lists():
    import torch

    from qdc_trainer.metrics import Corpus, distinct_n, ngram_entropy

    rng = np.random.default_rng(3)
    for high in (50, 10**12):  # a table over the ids, and ids too large for one
        seqs = [rng.integers(0, high, rng.integers(0, 20)) for _ in range(30)]
        seqs[4] = seqs[2].copy()
        lists = [s.tolist() for s in seqs]
        as_lists = Corpus.from_texts(lists)
        for items in (seqs, [torch.from_numpy(s) for s in seqs]):
            fast = Corpus.from_texts(items)
            assert np.array_equal(fast.offsets, as_lists.offsets) and fast.vocab_size == as_lists.vocab_size
            # the same tokens are equal: the ids are a renumbering of the lists' ids
            pairs = set(zip(fast.tokens.tolist(), as_lists.tokens.tolist()))
            assert len(pairs) == fast.vocab_size
            assert distinct_n(fast, 2) == distinct_n(lists, 2) and ngram_entropy(fast) == ngram_entropy(lists)
        texts = [" ".join(map(str, s)) for s in seqs]
        assert rollout_measures(seqs, np.ones(30), 3) == rollout_measures(texts, np.ones(30), 3)


def test_token_ids_replace_the_words_for_the_ngram_measures_only():
    texts = ["a b c", "a b d", "x y", "x y"]
    ids = [np.array([1, 2, 3]), np.array([1, 2, 4]), np.array([5, 6, 7]), np.array([8, 6, 7])]
    rewards = np.array([1.0, 0.0, 1.0, 1.0])
    answer = lambda t: t.split()[-1]  # noqa: E731
    got = rollout_measures(texts, rewards, 2, answer=answer, token_ids=ids)
    by_ids = rollout_measures(ids, rewards, 2)
    by_text = rollout_measures(texts, rewards, 2, answer=answer)
    for key in ("per_prompt/distinct_2", "across_prompt/distinct_2", "per_prompt/self_bleu", "across_prompt/self_bleu"):
        assert got[key] == by_ids[key]
    assert by_text["per_prompt/distinct_2"] == pytest.approx((3 / 4 + 1 / 2) / 2)  # "x y" twice: 1 of 2 bigrams
    assert got["per_prompt/distinct_2"] == pytest.approx((3 / 4 + 3 / 4) / 2)  # [5 6 7], [8 6 7]: 3 of 4
    assert got["distinct_answers"] == by_text["distinct_answers"] == pytest.approx(0.75)  # read from the text
    with pytest.raises(ValueError, match="token-id sequences"):
        rollout_measures(texts, rewards, 2, token_ids=ids[:3])
