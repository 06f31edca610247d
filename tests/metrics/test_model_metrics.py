"""Model-based complexity: token_entropy, sequence_perplexity, ifd_score, and lengths with a tokenizer.

Expected values come from hand formulas, an explicit per-token log-softmax loop over
the model's logits, or the model's own ``labels=`` loss on the same tokens.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import CORPUS, build_gpt2, completion_loss, token_ids

from qdc_trainer.metrics import ifd_score, lengths, sequence_perplexity, token_entropy

TEXTS = [
    "the cat sat on the mat",
    "a dog ran",
    "first add 2 and 3 to get 5 . then multiply 5 by 4 to get 20 .",
    "the answer is 20",
]
PROMPTS = ["instruction", "rate the quality of the response", "", "add 2 and 3 then multiply by 4"]


# ----------------------------------------------------------------------------- helpers


def loop_mean_nll(model, tokenizer, prompt: str, completion: str) -> float:
    """Mean NLL of the completion's tokens after [bos] + prompt, one position at a time."""
    p = token_ids(tokenizer, prompt) if prompt else []
    c = token_ids(tokenizer, completion)
    seq = [tokenizer.bos_token_id] + p + c
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0].double()
    total = 0.0
    for t in range(1 + len(p), len(seq)):
        logp = torch.log_softmax(logits[t - 1], dim=-1)
        total -= float(logp[seq[t]])
    return total / len(c)


def hand_entropy(logits: np.ndarray) -> np.ndarray:
    """-sum p log p over the last axis, float64, via a stable softmax."""
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    return -plogp.sum(axis=-1)


class UniformLM(torch.nn.Module):
    """A 'causal LM' whose next-token distribution is uniform over the vocabulary."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab_size))


@pytest.fixture()
def dropout_lm(tokenizer):
    """A fresh model with strong dropout: wrong (train-mode) evaluation would change its outputs."""
    return build_gpt2(tokenizer, seed=3, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)


# ----------------------------------------------------------------------------- token_entropy


def test_token_entropy_uniform_logits_is_log_vocab():
    out = token_entropy(torch.zeros(2, 3, 7))
    assert out.shape == (2,)
    assert torch.allclose(out, torch.full((2,), math.log(7)), atol=1e-6)


def test_token_entropy_one_hot_large_logit_is_zero():
    x = torch.zeros(1, 4, 10)
    x[..., 3] = 1e4
    assert float(token_entropy(x)[0]) == pytest.approx(0.0, abs=1e-6)
    # Huge finite logits do not overflow into NaN.
    y = torch.zeros(1, 2, 5)
    y[..., 0] = 1e30
    out = token_entropy(y)
    assert torch.isfinite(out).all()
    assert float(out[0]) == pytest.approx(0.0, abs=1e-6)


def test_token_entropy_two_point_distribution():
    p = 0.2
    x = torch.tensor([[[math.log(p), math.log(1 - p)]]])
    expected = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert float(token_entropy(x)[0]) == pytest.approx(expected, abs=1e-6)


def test_token_entropy_matches_hand_formula_on_random_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(3, 5, 11))
    expected = hand_entropy(logits).mean(axis=1)
    out = token_entropy(torch.tensor(logits, dtype=torch.float32))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_token_entropy_two_dimensional_input_is_one_sequence():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(6, 9)), dtype=torch.float32)
    out = token_entropy(logits)
    assert out.shape == (1,)
    assert float(out[0]) == pytest.approx(float(hand_entropy(logits.double().numpy()).mean()), abs=1e-5)


def test_token_entropy_ignores_masked_positions():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=2.0, size=(2, 4, 8))
    logits[0, 3] = 0.0  # uniform (maximal entropy) at a masked position
    logits[1, 0] = 50.0 * np.eye(8)[2]  # near one-hot at a masked position
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1]])
    per_pos = hand_entropy(logits)
    expected = [per_pos[0, :3].mean(), per_pos[1, 1:].mean()]
    out = token_entropy(torch.tensor(logits, dtype=torch.float32), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    # The unmasked mean differs: the mask really matters here.
    assert not np.allclose(token_entropy(torch.tensor(logits, dtype=torch.float32)).numpy(), expected, atol=1e-3)
    # Boolean and list masks give the same result.
    out_bool = token_entropy(
        torch.tensor(logits, dtype=torch.float32), attention_mask=torch.tensor(mask, dtype=torch.bool)
    )
    out_list = token_entropy(torch.tensor(logits, dtype=torch.float32), attention_mask=mask.tolist())
    np.testing.assert_allclose(out_bool.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out_list.numpy(), expected, atol=1e-5)


def test_token_entropy_one_dimensional_mask_for_one_sequence():
    x = torch.zeros(3, 4)
    x[2] = torch.tensor([100.0, 0.0, 0.0, 0.0])
    out = token_entropy(x, attention_mask=torch.tensor([1, 1, 0]))
    assert float(out[0]) == pytest.approx(math.log(4), abs=1e-6)
    out = token_entropy(x, attention_mask=torch.tensor([0, 0, 1]))
    assert float(out[0]) == pytest.approx(0.0, abs=1e-6)


def test_token_entropy_fully_masked_sequence_is_zero():
    out = token_entropy(torch.zeros(2, 3, 5), attention_mask=torch.tensor([[0, 0, 0], [1, 1, 1]]))
    assert float(out[0]) == 0.0
    assert float(out[1]) == pytest.approx(math.log(5), abs=1e-6)


def test_token_entropy_allows_minus_inf():
    x = torch.tensor([[[0.0, 0.0, -math.inf, -math.inf]]])
    out = token_entropy(x)
    assert torch.isfinite(out).all()
    assert float(out[0]) == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_token_entropy_half_precision_computed_in_float32(dtype):
    out = token_entropy(torch.zeros(1, 2, 6, dtype=dtype))
    assert out.dtype == torch.float32
    assert float(out[0]) == pytest.approx(math.log(6), abs=1e-5)


def test_token_entropy_of_model_logits_is_in_range(tokenizer, tiny_lm):
    seq = torch.tensor([[tokenizer.bos_token_id] + token_ids(tokenizer, TEXTS[2])])
    with torch.no_grad():
        logits = tiny_lm(input_ids=seq).logits
    out = float(token_entropy(logits)[0])
    assert 0.0 <= out <= math.log(len(tokenizer)) + 1e-6
    assert out == pytest.approx(float(hand_entropy(logits[0].double().numpy()).mean()), abs=1e-5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_token_entropy_rejects_nan_and_plus_inf(bad):
    x = torch.zeros(1, 3, 4)
    x[0, 1, 2] = bad
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        token_entropy(x)


def test_token_entropy_rejects_integer_logits():
    with pytest.raises(TypeError, match="floating point"):
        token_entropy(torch.zeros(1, 3, 4, dtype=torch.long))


@pytest.mark.parametrize("shape", [(4,), (1, 2, 3, 4)])
def test_token_entropy_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match="shape"):
        token_entropy(torch.zeros(shape))


def test_token_entropy_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="attention_mask shape"):
        token_entropy(torch.zeros(2, 3, 4), attention_mask=torch.ones(2, 4))


# ----------------------------------------------------------------------------- sequence_perplexity


def test_perplexity_matches_per_token_loop(tokenizer, tiny_lm):
    out = sequence_perplexity(tiny_lm, tokenizer, TEXTS, progress=False)
    expected = [math.exp(loop_mean_nll(tiny_lm, tokenizer, "", t)) for t in TEXTS]
    assert out.shape == (len(TEXTS),)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_perplexity_matches_model_labels_loss(tokenizer, tiny_lm):
    out = sequence_perplexity(tiny_lm, tokenizer, TEXTS, progress=False)
    expected = [math.exp(completion_loss(tiny_lm, tokenizer, "", t)) for t in TEXTS]
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_perplexity_given_prompts_scores_only_the_text(tokenizer, tiny_lm):
    out = sequence_perplexity(tiny_lm, tokenizer, TEXTS, prompts=PROMPTS, progress=False)
    loop = [math.exp(loop_mean_nll(tiny_lm, tokenizer, p, t)) for p, t in zip(PROMPTS, TEXTS)]
    loss = [math.exp(completion_loss(tiny_lm, tokenizer, p, t)) for p, t in zip(PROMPTS, TEXTS)]
    np.testing.assert_allclose(out, loop, rtol=1e-5)
    np.testing.assert_allclose(out, loss, rtol=1e-5)
    # A non-empty prompt changes the value (the prompt is really used).
    unconditioned = sequence_perplexity(tiny_lm, tokenizer, TEXTS, progress=False)
    assert abs(out[0] - unconditioned[0]) > 1e-4
    # An empty prompt is the same as no prompt.
    assert out[2] == pytest.approx(unconditioned[2], rel=1e-6)


def test_perplexity_of_uniform_model_is_vocab_size(tokenizer):
    model = UniformLM(len(tokenizer))
    out = sequence_perplexity(model, tokenizer, TEXTS, prompts=PROMPTS, progress=False)
    np.testing.assert_allclose(out, len(tokenizer), rtol=1e-6)


def test_perplexity_batching_equals_one_at_a_time(tokenizer, tiny_lm):
    texts = TEXTS + CORPUS
    prompts = PROMPTS + ["", "a", "the cat sat on the mat", "", "score"]
    batched = sequence_perplexity(tiny_lm, tokenizer, texts, prompts=prompts, batch_size=16, progress=False)
    single = sequence_perplexity(tiny_lm, tokenizer, texts, prompts=prompts, batch_size=1, progress=False)
    uneven = sequence_perplexity(tiny_lm, tokenizer, texts, prompts=prompts, batch_size=3, progress=False)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(uneven, single, rtol=1e-5, atol=1e-5)


def test_perplexity_truncates_completion_right_and_prompt_left(tokenizer, tiny_lm):
    # [bos] + 6 completion tokens > 5: the completion keeps its first 4 tokens.
    out = sequence_perplexity(tiny_lm, tokenizer, ["the cat sat on the mat"], max_length=5, progress=False)
    assert out[0] == pytest.approx(math.exp(loop_mean_nll(tiny_lm, tokenizer, "", "the cat sat on")), rel=1e-5)
    # [bos] + 3 prompt + 2 completion > 4: the prompt keeps its last token.
    out = sequence_perplexity(tiny_lm, tokenizer, ["the cat"], prompts=["a dog ran"], max_length=4, progress=False)
    assert out[0] == pytest.approx(math.exp(loop_mean_nll(tiny_lm, tokenizer, "ran", "the cat")), rel=1e-5)


def test_perplexity_of_text_longer_than_context_is_finite(tokenizer, tiny_lm):
    long_text = " ".join(["the cat sat on the mat"] * 20)  # 120 tokens > n_positions=64
    out = sequence_perplexity(tiny_lm, tokenizer, [long_text], progress=False)
    words = long_text.split()[:63]
    assert out[0] == pytest.approx(math.exp(loop_mean_nll(tiny_lm, tokenizer, "", " ".join(words))), rel=1e-5)


def test_perplexity_restores_train_mode(tokenizer, dropout_lm):
    expected = [math.exp(loop_mean_nll(dropout_lm.eval(), tokenizer, "", t)) for t in TEXTS]
    dropout_lm.train()
    out = sequence_perplexity(dropout_lm, tokenizer, TEXTS, progress=False)
    assert dropout_lm.training
    assert all(m.training for m in dropout_lm.modules())
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_perplexity_keeps_eval_mode(tokenizer, tiny_lm):
    sequence_perplexity(tiny_lm, tokenizer, TEXTS[:1], progress=False)
    assert not tiny_lm.training


def test_perplexity_empty_text_raises_naming_index(tokenizer, tiny_lm):
    with pytest.raises(ValueError, match=r"\[1\]"):
        sequence_perplexity(tiny_lm, tokenizer, ["the cat", "", "a dog"], progress=False)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        sequence_perplexity(tiny_lm, tokenizer, ["   ", "a dog", ""], progress=False)


def test_perplexity_mismatched_prompts_raise(tokenizer, tiny_lm):
    with pytest.raises(ValueError, match="differ in length"):
        sequence_perplexity(tiny_lm, tokenizer, ["the cat", "a dog"], prompts=["x"], progress=False)


@pytest.mark.parametrize(
    "texts, error",
    [([], ValueError), ("the cat sat", TypeError), ([None], TypeError), (["the cat", 3], TypeError), (5, TypeError)],
)
def test_perplexity_rejects_bad_texts(tokenizer, tiny_lm, texts, error):
    with pytest.raises(error):
        sequence_perplexity(tiny_lm, tokenizer, texts, progress=False)


def test_perplexity_rejects_non_string_prompts(tokenizer, tiny_lm):
    with pytest.raises(TypeError):
        sequence_perplexity(tiny_lm, tokenizer, ["the cat"], prompts=[None], progress=False)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_perplexity_rejects_bad_batch_size(tokenizer, tiny_lm, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        sequence_perplexity(tiny_lm, tokenizer, TEXTS, batch_size=batch_size)


def test_perplexity_progress_bar(tokenizer, tiny_lm, capfd):
    sequence_perplexity(tiny_lm, tokenizer, TEXTS, batch_size=1, progress=False)
    assert "Perplexity" not in capfd.readouterr().err
    sequence_perplexity(tiny_lm, tokenizer, TEXTS, batch_size=8, progress=True)
    assert "Perplexity" in capfd.readouterr().err
    # Default: a bar only when there are several batches.
    sequence_perplexity(tiny_lm, tokenizer, TEXTS, batch_size=8)
    assert "Perplexity" not in capfd.readouterr().err
    sequence_perplexity(tiny_lm, tokenizer, TEXTS, batch_size=2)
    assert "Perplexity" in capfd.readouterr().err


# ----------------------------------------------------------------------------- ifd_score


def test_ifd_is_ratio_of_conditioned_and_direct_losses(tokenizer, tiny_lm):
    instructions = ["add 2 and 3", "rate the quality of the response", "the cat sat on the"]
    answers = ["5", "6 7 8", "mat"]
    out = ifd_score(tiny_lm, tokenizer, instructions, answers, progress=False)
    expected = [
        completion_loss(tiny_lm, tokenizer, i, a) / completion_loss(tiny_lm, tokenizer, "", a)
        for i, a in zip(instructions, answers)
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    loop = [
        loop_mean_nll(tiny_lm, tokenizer, i, a) / loop_mean_nll(tiny_lm, tokenizer, "", a)
        for i, a in zip(instructions, answers)
    ]
    np.testing.assert_allclose(out, loop, rtol=1e-5)
    assert not np.allclose(out, 1.0)


def test_ifd_with_empty_instruction_is_one(tokenizer, tiny_lm):
    out = ifd_score(tiny_lm, tokenizer, ["", ""], ["the cat sat", "5"], progress=False)
    np.testing.assert_allclose(out, 1.0, rtol=1e-9)


def test_ifd_of_uniform_model_is_one(tokenizer):
    out = ifd_score(UniformLM(len(tokenizer)), tokenizer, ["add 2 and 3"], ["5"], progress=False)
    assert out[0] == pytest.approx(1.0, rel=1e-6)


def test_ifd_batching_equals_one_at_a_time(tokenizer, tiny_lm):
    instructions = ["add 2 and 3", "a", "rate the quality of the response to the instruction", "the cat"]
    answers = ["then multiply 5 by 4 to get 20", "dog", "4", "sat on the mat"]
    batched = ifd_score(tiny_lm, tokenizer, instructions, answers, batch_size=8, progress=False)
    single = ifd_score(tiny_lm, tokenizer, instructions, answers, batch_size=1, progress=False)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)


def test_ifd_restores_train_mode(tokenizer, dropout_lm):
    expected = completion_loss(dropout_lm.eval(), tokenizer, "add 2 and 3", "5") / completion_loss(
        dropout_lm, tokenizer, "", "5"
    )
    dropout_lm.train()
    out = ifd_score(dropout_lm, tokenizer, ["add 2 and 3"], ["5"], progress=False)
    assert dropout_lm.training
    assert out[0] == pytest.approx(expected, rel=1e-5)


def test_ifd_empty_answer_raises_naming_index(tokenizer, tiny_lm):
    with pytest.raises(ValueError, match=r"\[1\]"):
        ifd_score(tiny_lm, tokenizer, ["add 2 and 3", "the cat"], ["5", ""], progress=False)


def test_ifd_mismatched_lengths_raise(tokenizer, tiny_lm):
    with pytest.raises(ValueError, match="differ in length"):
        ifd_score(tiny_lm, tokenizer, ["a", "b"], ["c"], progress=False)
    with pytest.raises(ValueError, match="differ in length"):
        ifd_score(tiny_lm, tokenizer, ["a"], ["c", "d"], progress=False)


def test_ifd_rejects_empty_and_non_string_inputs(tokenizer, tiny_lm):
    with pytest.raises(ValueError):
        ifd_score(tiny_lm, tokenizer, [], [], progress=False)
    with pytest.raises(TypeError):
        ifd_score(tiny_lm, tokenizer, [None], ["the cat"], progress=False)
    with pytest.raises(TypeError):
        ifd_score(tiny_lm, tokenizer, ["the cat"], [1.5], progress=False)


def test_ifd_progress_bars(tokenizer, tiny_lm, capfd):
    ifd_score(tiny_lm, tokenizer, ["a", "b"], ["c", "d"], batch_size=1, progress=False)
    assert "IFD" not in capfd.readouterr().err
    ifd_score(tiny_lm, tokenizer, ["a", "b"], ["c", "d"], batch_size=1, progress=True)
    err = capfd.readouterr().err
    assert "IFD (conditioned)" in err and "IFD (direct)" in err


# ----------------------------------------------------------------------------- lengths with a tokenizer


def build_tokenizer_variant(*, split_digits: bool = False, add_bos: bool = False):
    """The conftest word-level tokenizer, optionally splitting digits and adding BOS as a special token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"])
    tok.train_from_iterator(CORPUS + [" ".join(str(i) for i in range(10))], trainer)
    if add_bos:
        bos = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def test_lengths_with_tokenizer_counts_tokens(tokenizer):
    texts = ["the cat sat", "", "1 2 3 4", "zebra the"]
    out = lengths(texts, tokenizer)
    assert out.dtype == np.float64
    assert out.tolist() == [3.0, 0.0, 4.0, 2.0]
    assert out.tolist() == [float(len(token_ids(tokenizer, t))) for t in texts]


def test_lengths_with_tokenizer_differs_from_word_count():
    digits = build_tokenizer_variant(split_digits=True)
    texts = ["add 12 and 345", "the cat"]
    assert lengths(texts).tolist() == [4.0, 2.0]
    assert lengths(texts, digits).tolist() == [7.0, 2.0]


def test_lengths_with_tokenizer_excludes_special_tokens():
    with_bos = build_tokenizer_variant(add_bos=True)
    assert with_bos("the cat sat")["input_ids"][0] == with_bos.bos_token_id  # the tokenizer does add BOS...
    assert lengths(["the cat sat", "a dog"], with_bos).tolist() == [3.0, 2.0]  # ...but it is not counted


def test_lengths_with_tokenizer_counts_token_sequences_as_they_are():
    # Documented: "Token sequences are counted as they are." Two token ids are two tokens,
    # whatever the tokenizer would make of their decimal spelling.
    digits = build_tokenizer_variant(split_digits=True)
    assert lengths([[5, 6, 7]], digits).tolist() == [3.0]
    assert lengths([[10, 11], [5]], digits).tolist() == [2.0, 1.0]


def test_lengths_with_tokenizer_rejects_bad_input(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        lengths([], tokenizer)
    with pytest.raises(TypeError):
        lengths("the cat sat", tokenizer)
    with pytest.raises(TypeError):
        lengths(["the cat", None], tokenizer)
