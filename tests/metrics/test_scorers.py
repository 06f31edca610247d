"""Quality scorers: VerifierScorer, RewardModelScorer, PerplexityScorer, JudgeScorer, extract_final_answer.

Model-based scores are checked against a direct forward pass of the same model.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import CORPUS, build_gpt2, build_gpt2_classifier, build_tokenizer, completion_loss, token_ids

from qdc_trainer.metrics import (
    JudgeScorer,
    PerplexityScorer,
    RewardModelScorer,
    Scorer,
    VerifierScorer,
    extract_final_answer,
    sequence_perplexity,
)
from qdc_trainer.metrics.quality import DEFAULT_JUDGE_TEMPLATE

PROMPTS = ["add 2 and 3", "the cat sat on the", "rate the quality of the response", "a dog"]
COMPLETIONS = ["5", "mat", "6 7 8 9 first", "ran in the park then the dog sat on the mat"]


# ----------------------------------------------------------------------------- helpers


def direct_reward_logits(model, enc) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: torch.tensor([v]) for k, v in enc.items()}).logits[0].double()


def hand_judge_score(model, tokenizer, prompt: str, completion: str, levels: int = 6, template=DEFAULT_JUDGE_TEMPLATE):
    """sum_k k * softmax(logits of the level tokens) after the filled-in template, from one forward pass."""
    text = template.format(prompt=prompt, completion=completion, levels=levels)
    seq = tokenizer(text)["input_ids"]
    with torch.no_grad():
        last = model(input_ids=torch.tensor([seq])).logits[0, -1].double()
    level_ids = [tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, levels + 1)]
    z = last[level_ids]
    p = torch.exp(z - z.max())
    p = p / p.sum()
    return float(sum((k + 1) * float(p[k]) for k in range(levels))), p.numpy()


class FixedLogitsLM(torch.nn.Module):
    """A 'causal LM' that predicts the same next-token logits at every position."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.fixed = logits
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.fixed.expand(*input_ids.shape, -1).clone())


@pytest.fixture()
def dropout_lm(tokenizer):
    return build_gpt2(tokenizer, seed=5, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)


@pytest.fixture(scope="module")
def reward_model_1(tokenizer):
    return build_gpt2_classifier(tokenizer, 1)


@pytest.fixture(scope="module")
def reward_model_3(tokenizer):
    return build_gpt2_classifier(tokenizer, 3, seed=1)


# ----------------------------------------------------------------------------- extract_final_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#### 42", "42"),
        ("3 + 4 = 7. The answer is 7.", "7"),
        ("so the answer: -3.5", "-3.5"),
        ("Answer: 12 apples", "12"),
        ("first 2 + 3 = 5 then 5 * 4 = 20", "20"),
        ("#### 1\nwait, recheck\n#### 2", "2"),
        ("The answer is 10 and then 11 more", "10"),
        ("The answer is yes.", "yes"),
        ("step 1 then #### 8", "8"),
        ("no digits here", None),
        ("", None),
        ("The answer is.", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_extract_final_answer_rejects_non_string():
    with pytest.raises(TypeError, match="str"):
        extract_final_answer(42)
    with pytest.raises(TypeError):
        extract_final_answer(None)


# ----------------------------------------------------------------------------- VerifierScorer


def test_verifier_booleans_and_numbers():
    answers = {"2+2": "4", "3*3": "9"}
    scorer = VerifierScorer(lambda p, c: extract_final_answer(c) == answers[p])
    out = scorer(["2+2", "2+2", "3*3"], ["2 + 2 = 4", "It is 5", "#### 9"])
    assert out.dtype == np.float64
    assert out.tolist() == [1.0, 0.0, 1.0]
    assert VerifierScorer(lambda p, c: len(c) / 4)(["a", "b"], ["ab", "abc"]).tolist() == [0.5, 0.75]
    assert VerifierScorer(lambda p, c: np.float32(0.25))(["a"], ["b"]).tolist() == [0.25]
    assert VerifierScorer(lambda p, c: np.bool_(True))(["a"], ["b"]).tolist() == [1.0]
    assert scorer.higher_is_better is True
    assert isinstance(scorer, Scorer)


def test_verifier_receives_pairs_in_order():
    seen = []
    VerifierScorer(lambda p, c: seen.append((p, c)) or 1.0)(["p0", "p1", "p2"], ["c0", "c1", "c2"])
    assert seen == [("p0", "c0"), ("p1", "c1"), ("p2", "c2")]
    seen.clear()
    VerifierScorer(lambda p, c: seen.append((p, c)) or 1.0)(None, ["c0", "c1"])
    assert seen == [("", "c0"), ("", "c1")]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_verifier_non_finite_raises_naming_pair(bad):
    scorer = VerifierScorer(lambda p, c: bad if c == "bad" else 1.0)
    with pytest.raises(ValueError, match="pair 1"):
        scorer(["a", "b", "c"], ["ok", "bad", "ok"])


@pytest.mark.parametrize("bad", [None, "yes", object(), [1.0, 2.0]])
def test_verifier_non_number_raises_naming_pair(bad):
    scorer = VerifierScorer(lambda p, c: bad if c == "bad" else True)
    with pytest.raises(TypeError, match="pair 2"):
        scorer(["a", "b", "c"], ["ok", "ok", "bad"])


def test_verifier_exception_names_pair_and_chains():
    def fn(p, c):
        if c == "boom":
            raise KeyError("missing")
        return 1.0

    with pytest.raises(RuntimeError, match="pair 1") as info:
        VerifierScorer(fn)(["x", "the prompt"], ["ok", "boom"])
    assert "the prompt" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


def test_verifier_rejects_non_callable():
    with pytest.raises(TypeError, match="callable"):
        VerifierScorer(1.0)


def test_verifier_rejects_bad_pairs():
    scorer = VerifierScorer(lambda p, c: 1.0)
    with pytest.raises(ValueError, match="differ in length"):
        scorer(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="empty"):
        scorer([], [])
    with pytest.raises(TypeError):
        scorer(["a"], [None])
    with pytest.raises(TypeError):
        scorer([3], ["a"])
    with pytest.raises(TypeError):
        scorer("a", "b")


def test_verifier_progress(capfd):
    VerifierScorer(lambda p, c: 1.0, progress=False)(["a"] * 3, ["b"] * 3)
    assert "Verifying" not in capfd.readouterr().err
    VerifierScorer(lambda p, c: 1.0, progress=True)(["a"] * 3, ["b"] * 3)
    assert "Verifying" in capfd.readouterr().err
    VerifierScorer(lambda p, c: 1.0)(["a"] * 3, ["b"] * 3)  # default: no bar for a few pairs
    assert "Verifying" not in capfd.readouterr().err


# ----------------------------------------------------------------------------- RewardModelScorer


def test_reward_single_label_is_the_logit(tokenizer, reward_model_1):
    scorer = RewardModelScorer(reward_model_1, tokenizer, progress=False)
    out = scorer(PROMPTS, COMPLETIONS)
    expected = [float(direct_reward_logits(reward_model_1, tokenizer(p, c))[0]) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert out.shape == (4,)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert len(set(np.round(out, 6))) == 4  # the pairs really get different scores
    assert scorer.higher_is_better is True
    assert isinstance(scorer, Scorer)


def test_reward_multi_label_is_softmax_of_last_label(tokenizer, reward_model_3):
    out = RewardModelScorer(reward_model_3, tokenizer, progress=False)(PROMPTS, COMPLETIONS)
    probs = [
        torch.softmax(direct_reward_logits(reward_model_3, tokenizer(p, c)), -1) for p, c in zip(PROMPTS, COMPLETIONS)
    ]
    np.testing.assert_allclose(out, [float(q[2]) for q in probs], rtol=1e-5, atol=1e-6)
    assert ((out > 0) & (out < 1)).all()
    first = RewardModelScorer(reward_model_3, tokenizer, positive_label=0, progress=False)(PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(first, [float(q[0]) for q in probs], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("label", [3, -1, 10])
def test_reward_rejects_out_of_range_positive_label(tokenizer, reward_model_3, label):
    with pytest.raises(ValueError, match="positive_label"):
        RewardModelScorer(reward_model_3, tokenizer, positive_label=label)


def test_reward_single_label_rejects_positive_label_one(tokenizer, reward_model_1):
    with pytest.raises(ValueError, match="positive_label"):
        RewardModelScorer(reward_model_1, tokenizer, positive_label=1)


def test_reward_batching_equals_one_at_a_time(tokenizer, reward_model_1, reward_model_3):
    prompts = PROMPTS + CORPUS
    completions = COMPLETIONS + ["x", "", "the", "1 2", "score"]
    for model in (reward_model_1, reward_model_3):
        batched = RewardModelScorer(model, tokenizer, batch_size=16, progress=False)(prompts, completions)
        single = RewardModelScorer(model, tokenizer, batch_size=1, progress=False)(prompts, completions)
        uneven = RewardModelScorer(model, tokenizer, batch_size=3, progress=False)(prompts, completions)
        np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(uneven, single, rtol=1e-5, atol=1e-5)


def test_reward_uses_chat_template(reward_model_1):
    chat_tok = build_tokenizer()
    chat_tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}instruction {% else %}response {% endif %}"
        "{{ m['content'] }} {% endfor %}"
    )
    out = RewardModelScorer(reward_model_1, chat_tok, progress=False)(PROMPTS[:2], COMPLETIONS[:2])
    expected = [
        float(direct_reward_logits(reward_model_1, chat_tok(f"instruction {p} response {c} "))[0])
        for p, c in zip(PROMPTS[:2], COMPLETIONS[:2])
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    plain = RewardModelScorer(reward_model_1, build_tokenizer(), progress=False)(PROMPTS[:2], COMPLETIONS[:2])
    assert not np.allclose(out, plain, atol=1e-4)


def test_reward_truncates_to_context(tokenizer, reward_model_1):
    long_completion = " ".join(["the cat sat on the mat"] * 20)  # 120 tokens > n_positions=64
    out = RewardModelScorer(reward_model_1, tokenizer, progress=False)(["add 2 and 3"], [long_completion])
    assert np.isfinite(out).all()
    enc = tokenizer("add 2 and 3", long_completion, truncation=True, max_length=64)
    assert len(enc["input_ids"]) == 64
    assert out[0] == pytest.approx(float(direct_reward_logits(reward_model_1, enc)[0]), abs=1e-5)


def test_reward_restores_train_mode(tokenizer):
    model = build_gpt2_classifier(tokenizer, 1, seed=2, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)
    expected = [float(direct_reward_logits(model, tokenizer(p, c))[0]) for p, c in zip(PROMPTS, COMPLETIONS)]
    model.train()
    out = RewardModelScorer(model, tokenizer, progress=False)(PROMPTS, COMPLETIONS)
    assert model.training
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_reward_rejects_bad_pairs(tokenizer, reward_model_1):
    scorer = RewardModelScorer(reward_model_1, tokenizer, progress=False)
    with pytest.raises(ValueError, match="differ in length"):
        scorer(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="empty"):
        scorer([], [])
    with pytest.raises(TypeError):
        scorer(["a"], [None])


def test_reward_progress(tokenizer, reward_model_1, capfd):
    RewardModelScorer(reward_model_1, tokenizer, batch_size=1, progress=False)(PROMPTS, COMPLETIONS)
    assert "Reward model" not in capfd.readouterr().err
    RewardModelScorer(reward_model_1, tokenizer, batch_size=16, progress=True)(PROMPTS, COMPLETIONS)
    assert "Reward model" in capfd.readouterr().err


# ----------------------------------------------------------------------------- PerplexityScorer


def test_perplexity_scorer_matches_direct_loss(tokenizer, tiny_lm):
    scorer = PerplexityScorer(tiny_lm, tokenizer, progress=False)
    out = scorer(PROMPTS, COMPLETIONS)
    expected = [math.exp(completion_loss(tiny_lm, tokenizer, p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    same = sequence_perplexity(tiny_lm, tokenizer, COMPLETIONS, prompts=PROMPTS, progress=False)
    np.testing.assert_allclose(out, same, rtol=1e-12)
    assert scorer.higher_is_better is False
    assert isinstance(scorer, Scorer)


def test_perplexity_scorer_of_uniform_model_is_vocab_size(tokenizer):
    model = FixedLogitsLM(torch.zeros(len(tokenizer)))
    out = PerplexityScorer(model, tokenizer, progress=False)(PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(out, len(tokenizer), rtol=1e-6)


def test_perplexity_scorer_batching_equals_one_at_a_time(tokenizer, tiny_lm):
    batched = PerplexityScorer(tiny_lm, tokenizer, batch_size=8, progress=False)(PROMPTS, COMPLETIONS)
    single = PerplexityScorer(tiny_lm, tokenizer, batch_size=1, progress=False)(PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)


def test_perplexity_scorer_restores_train_mode(tokenizer, dropout_lm):
    expected = [math.exp(completion_loss(dropout_lm.eval(), tokenizer, p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    dropout_lm.train()
    out = PerplexityScorer(dropout_lm, tokenizer, progress=False)(PROMPTS, COMPLETIONS)
    assert dropout_lm.training
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_perplexity_scorer_bad_input(tokenizer, tiny_lm):
    scorer = PerplexityScorer(tiny_lm, tokenizer, progress=False)
    with pytest.raises(ValueError, match=r"\[2\]"):
        scorer(["a", "b", "c"], ["the cat", "a dog", ""])
    with pytest.raises(ValueError, match="differ in length"):
        scorer(["a"], ["the cat", "a dog"])
    with pytest.raises(ValueError, match="empty"):
        scorer([], [])
    with pytest.raises(TypeError):
        scorer(["a"], [7])


def test_perplexity_scorer_progress(tokenizer, tiny_lm, capfd):
    PerplexityScorer(tiny_lm, tokenizer, batch_size=1, progress=False)(PROMPTS, COMPLETIONS)
    assert "Perplexity" not in capfd.readouterr().err
    PerplexityScorer(tiny_lm, tokenizer, batch_size=8, progress=True)(PROMPTS, COMPLETIONS)
    assert "Perplexity" in capfd.readouterr().err


# ----------------------------------------------------------------------------- JudgeScorer


def test_judge_matches_hand_expected_score(tokenizer, tiny_lm):
    judge = JudgeScorer(tiny_lm, tokenizer, progress=False)
    out = judge(PROMPTS, COMPLETIONS)
    probs = judge.probabilities(PROMPTS, COMPLETIONS)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
        score, hand_p = hand_judge_score(tiny_lm, tokenizer, p, c)
        assert out[i] == pytest.approx(score, abs=1e-5)
        np.testing.assert_allclose(probs[i], hand_p, atol=1e-6)
    assert probs.shape == (4, 6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert ((out >= 1) & (out <= 6)).all()
    assert judge.higher_is_better is True
    assert isinstance(judge, Scorer)


def test_judge_level_tokens(tokenizer, tiny_lm):
    judge = JudgeScorer(tiny_lm, tokenizer, levels=4)
    assert judge.level_token_ids.tolist() == [tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, 5)]


def test_judge_custom_template_and_levels(tokenizer, tiny_lm):
    template = "instruction {prompt} response {completion} score 1 to {levels} :"
    judge = JudgeScorer(tiny_lm, tokenizer, levels=4, template=template, progress=False)
    out = judge(PROMPTS[:2], COMPLETIONS[:2])
    expected = [
        hand_judge_score(tiny_lm, tokenizer, p, c, levels=4, template=template)[0]
        for p, c in zip(PROMPTS[:2], COMPLETIONS[:2])
    ]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert ((out >= 1) & (out <= 4)).all()


def test_judge_known_values_from_fixed_logits(tokenizer):
    level_ids = [tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, 7)]
    # Probabilities are computed in float32: values are checked to 1e-6.
    # Uniform over the levels (other tokens are irrelevant): the mean of 1..6.
    logits = torch.randn(len(tokenizer), generator=torch.Generator().manual_seed(0))
    logits[level_ids] = 0.0
    assert JudgeScorer(FixedLogitsLM(logits), tokenizer)(["a"], ["b"])[0] == pytest.approx(3.5, abs=1e-6)
    # Certain of "6" / of "1".
    for k, expected in ((6, 6.0), (1, 1.0)):
        sure = torch.zeros(len(tokenizer))
        sure[level_ids[k - 1]] = 100.0
        assert JudgeScorer(FixedLogitsLM(sure), tokenizer)(["a"], ["b"])[0] == pytest.approx(expected, abs=1e-6)
    # p = (.1, .2, .3, .4, 0, 0): score = .1 + .4 + .9 + 1.6 = 3.0
    mixed = torch.full((len(tokenizer),), 5.0)
    for k, p in enumerate([0.1, 0.2, 0.3, 0.4]):
        mixed[level_ids[k]] = math.log(p)
    mixed[level_ids[4]] = mixed[level_ids[5]] = -math.inf
    judge = JudgeScorer(FixedLogitsLM(mixed), tokenizer)
    assert judge(["a"], ["b"])[0] == pytest.approx(3.0, abs=1e-6)
    np.testing.assert_allclose(judge.probabilities(["a"], ["b"])[0], [0.1, 0.2, 0.3, 0.4, 0, 0], atol=1e-6)


def test_judge_batching_equals_one_at_a_time(tokenizer, tiny_lm):
    prompts = PROMPTS + CORPUS
    completions = COMPLETIONS + ["x", "", "the", "1 2", "score"]
    batched = JudgeScorer(tiny_lm, tokenizer, batch_size=16, progress=False)(prompts, completions)
    single = JudgeScorer(tiny_lm, tokenizer, batch_size=1, progress=False)(prompts, completions)
    uneven = JudgeScorer(tiny_lm, tokenizer, batch_size=3, progress=False)(prompts, completions)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(uneven, single, rtol=1e-5, atol=1e-5)


def test_judge_truncates_from_the_left(tokenizer, tiny_lm):
    out = JudgeScorer(tiny_lm, tokenizer, max_length=5, progress=False)(["the cat"], ["sat on the mat"])
    text = DEFAULT_JUDGE_TEMPLATE.format(prompt="the cat", completion="sat on the mat", levels=6)
    seq = tokenizer(text)["input_ids"][-5:]
    with torch.no_grad():
        last = tiny_lm(input_ids=torch.tensor([seq])).logits[0, -1].double()
    level_ids = [tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, 7)]
    p = torch.softmax(last[level_ids], -1)
    assert out[0] == pytest.approx(float((p * torch.arange(1, 7)).sum()), abs=1e-5)


def test_judge_restores_train_mode(tokenizer, dropout_lm):
    expected = [hand_judge_score(dropout_lm.eval(), tokenizer, p, c)[0] for p, c in zip(PROMPTS, COMPLETIONS)]
    dropout_lm.train()
    out = JudgeScorer(dropout_lm, tokenizer, progress=False)(PROMPTS, COMPLETIONS)
    assert dropout_lm.training
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("levels", [1, 0, True, 2.0, "6"])
def test_judge_rejects_bad_levels(tokenizer, tiny_lm, levels):
    with pytest.raises(ValueError, match="levels"):
        JudgeScorer(tiny_lm, tokenizer, levels=levels)


@pytest.mark.parametrize("template", ["{prompt} only", "only {completion}"])
def test_judge_rejects_template_without_fields(tokenizer, tiny_lm, template):
    with pytest.raises(ValueError, match="template must contain"):
        JudgeScorer(tiny_lm, tokenizer, template=template)


def build_digit_splitting_tokenizer():
    """The conftest vocabulary, but digits are pre-tokenized one by one: "10" is two tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"])
    tok.train_from_iterator(CORPUS + [" ".join(str(i) for i in range(10))], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def test_judge_rejects_multi_token_level():
    digits = build_digit_splitting_tokenizer()
    model = FixedLogitsLM(torch.zeros(len(digits)))
    assert JudgeScorer(model, digits, levels=9).level_token_ids.shape == (9,)
    with pytest.raises(ValueError, match="'10'"):
        JudgeScorer(model, digits, levels=10)


def test_judge_rejects_level_outside_vocabulary(tokenizer, tiny_lm):
    # "10" is not in the vocabulary: the word-level tokenizer maps it to a single <unk> token.
    # Documented: "Each level must be a single token of the judge's vocabulary; otherwise the
    # constructor raises and names the level." Scoring level 10 by <unk>'s probability is wrong.
    assert token_ids(tokenizer, "10") == [tokenizer.unk_token_id]
    with pytest.raises(ValueError, match="'10'"):
        JudgeScorer(tiny_lm, tokenizer, levels=10)


def test_judge_rejects_bad_pairs(tokenizer, tiny_lm):
    judge = JudgeScorer(tiny_lm, tokenizer, progress=False)
    with pytest.raises(ValueError, match="differ in length"):
        judge(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="empty"):
        judge([], [])
    with pytest.raises(TypeError):
        judge([None], ["c"])
    with pytest.raises(TypeError):
        judge.probabilities(["a"], [b"c"])


def test_judge_progress(tokenizer, tiny_lm, capfd):
    JudgeScorer(tiny_lm, tokenizer, batch_size=1, progress=False)(PROMPTS, COMPLETIONS)
    assert "Judge" not in capfd.readouterr().err
    JudgeScorer(tiny_lm, tokenizer, batch_size=8, progress=True)(PROMPTS, COMPLETIONS)
    assert "Judge" in capfd.readouterr().err
