"""qdc_trainer.generation: the sampling loop every caller uses, checked against plain generate and forward calls."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from helpers import build_gpt2, build_tokenizer

from qdc_trainer.generation import Sample, fit_to_context, forked_rng, generate, split_prompts

PROMPTS = ["the cat", "a dog ran in the park", "first add 2 and 3 to get", "the"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_gpt2(tok, seed=2)


def ids_of(tok, prompts):
    return [tok(p)["input_ids"] for p in prompts]


def cut_at_eos(tokens, eos):
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


# --------------------------------------------------------------------------- padding and positions


def test_left_padded_batches_give_the_tokens_of_unpadded_single_prompts(model, tok):
    """Greedy tokens of a left-padded batch = plain generate on each prompt alone, with no padding at all."""
    eos = tok.eos_token_id
    samples = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=len(PROMPTS))
    assert [s.prompt_index for s in samples] == [0, 1, 2, 3]
    for prompt, sample in zip(PROMPTS, samples):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=12,
                pad_token_id=tok.pad_token_id,
            )
        alone = cut_at_eos(out[0, ids.shape[1] :].tolist(), eos)
        assert sample.token_ids == alone
        assert sample.finished == (eos in alone)
        assert sample.text == tok.decode(
            [t for t in alone if t not in (eos, tok.pad_token_id)], skip_special_tokens=True
        )
    # batch size does not change greedy results either
    assert [s.token_ids for s in generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=1)] == [
        s.token_ids for s in samples
    ]


def test_strings_and_token_ids_are_the_same_prompts(model, tok):
    as_text = generate(model, tok, PROMPTS, max_new_tokens=6)
    as_ids = generate(model, tok, ids_of(tok, PROMPTS), max_new_tokens=6)
    mixed = generate(model, tok, [PROMPTS[0], *ids_of(tok, PROMPTS[1:])], max_new_tokens=6)
    tensors = generate(model, tok, [torch.tensor(ids) for ids in ids_of(tok, PROMPTS)], max_new_tokens=6)
    arrays = generate(model, tok, [np.array(ids) for ids in ids_of(tok, PROMPTS)], max_new_tokens=6)
    assert as_text == as_ids == mixed == tensors == arrays


def test_the_tokenizer_is_never_modified(model, tok):
    side, pad = tok.padding_side, tok.pad_token
    tok.padding_side = "right"  # a training tokenizer; left padding is done by hand
    try:
        generate(model, tok, PROMPTS, max_new_tokens=4, num_samples=2, do_sample=True, seed=0)
        assert tok.padding_side == "right" and tok.pad_token == pad
    finally:
        tok.padding_side = side


# --------------------------------------------------------------------------- random state, model state


def test_a_seed_forks_the_rng_and_leaves_the_global_streams_untouched(model, tok):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = generate(model, tok, PROMPTS, num_samples=3, max_new_tokens=10, do_sample=True, seed=7, batch_size=4)
    assert torch.equal(before, torch.random.get_rng_state())
    again = generate(model, tok, PROMPTS, num_samples=3, max_new_tokens=10, do_sample=True, seed=7, batch_size=4)
    other = generate(model, tok, PROMPTS, num_samples=3, max_new_tokens=10, do_sample=True, seed=8, batch_size=4)
    assert first == again and first != other
    # the seed gives the draws of plain generate seeded the same way (one prompt, one call)
    ids = torch.tensor([tok(PROMPTS[1])["input_ids"]])
    torch.manual_seed(7)
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=10,
            num_return_sequences=3,
            pad_token_id=tok.pad_token_id,
        )
    one = generate(model, tok, PROMPTS[1:2], num_samples=3, max_new_tokens=10, do_sample=True, seed=7)
    assert [s.token_ids for s in one] == [cut_at_eos(row, tok.eos_token_id) for row in out[:, ids.shape[1] :].tolist()]
    # without a seed the global stream is used, as model.generate does
    fresh = torch.manual_seed(0).get_state()
    generate(model, tok, PROMPTS, max_new_tokens=4, do_sample=True)
    assert not torch.equal(torch.random.get_rng_state(), fresh)


def test_forked_rng_restores_the_caller_stream():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with forked_rng(1):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with forked_rng(1):
        assert torch.equal(torch.rand(3), inside)


@pytest.mark.parametrize("training", [True, False])
def test_mode_is_restored_and_generation_runs_in_eval_mode(tok, training):
    model = build_gpt2(tok, seed=1, resid_pdrop=0.5, embd_pdrop=0.5)  # dropout would change the samples
    model.train(training)
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    try:
        samples = generate(model, tok, PROMPTS, max_new_tokens=5)
    finally:
        hook.remove()
    assert model.training == training and seen and not any(seen)
    assert samples == generate(model.eval(), tok, PROMPTS, max_new_tokens=5)


def test_mode_is_restored_and_the_hook_removed_when_generate_fails(tok, monkeypatch):
    model = build_gpt2(tok).train()

    def boom(**kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", boom)
    with pytest.raises(RuntimeError, match="out of memory"):
        generate(model, tok, PROMPTS, return_entropy=True)
    assert model.training and not model._forward_hooks


def test_the_cache_is_used_and_activation_checkpointing_left_as_is(tok):
    results = []
    for checkpointing in (False, True):
        model = build_gpt2(tok, seed=4).train()
        model.config.use_cache = False  # what a Trainer sets
        if checkpointing:
            model.activation_checkpointing_enable()
        lengths = []
        hook = model.register_forward_pre_hook(
            lambda m, a, k: lengths.append(k["input_ids"].shape[1]),  # noqa: B023 (hook removed in this iteration)
            with_kwargs=True,
        )
        results.append(
            generate(model, tok, PROMPTS, num_samples=2, max_new_tokens=6, do_sample=True, seed=1, return_entropy=True)
        )
        hook.remove()
        assert lengths[1:] and set(lengths[1:]) == {1}  # after the prompt, one new token per step: the cache works
        assert model.training and model.is_activation_checkpointing == checkpointing
    assert results[0] == results[1]


# --------------------------------------------------------------------------- entropy and log-probabilities


def test_entropy_and_logprobs_match_a_plain_forward_pass(model, tok):
    samples = generate(
        model,
        tok,
        PROMPTS,
        num_samples=2,
        max_new_tokens=10,
        do_sample=True,
        seed=3,
        batch_size=4,
        return_entropy=True,
        return_logprobs=True,
    )
    assert len(samples) == 8 and [s.prompt_index for s in samples] == [0, 0, 1, 1, 2, 2, 3, 3]
    for sample in samples:
        prompt = tok(PROMPTS[sample.prompt_index])["input_ids"]
        sequence = torch.tensor([prompt + sample.token_ids])  # alone: no padding, default positions
        with torch.no_grad():
            logits = model(sequence).logits[0, len(prompt) - 1 : -1].float()
        logp = torch.log_softmax(logits, -1)
        entropy = -(logp.exp() * logp).sum(-1)
        token_logp = logp.gather(-1, torch.tensor(sample.token_ids).unsqueeze(-1)).squeeze(-1)
        assert len(sample.entropy) == len(sample.logprobs) == len(sample.token_ids) >= 1
        assert sample.entropy == pytest.approx(entropy.tolist(), rel=1e-4, abs=1e-5)
        assert sample.logprobs == pytest.approx(token_logp.tolist(), rel=1e-4, abs=1e-5)
        assert sample.entropy_sum == pytest.approx(float(entropy.sum()), rel=1e-4)
        assert sample.mean_logprob == pytest.approx(float(token_logp.mean()), rel=1e-4, abs=1e-5)
    plain = generate(model, tok, PROMPTS, num_samples=2, max_new_tokens=10, do_sample=True, seed=3, batch_size=4)
    assert [s.token_ids for s in plain] == [s.token_ids for s in samples]  # scoring draws no random numbers
    assert all(s.entropy is None and s.logprobs is None and s.mean_logprob is None for s in plain)


def test_logprobs_in_chunks_are_the_same(model, tok, monkeypatch):
    import qdc_trainer.generation as G

    kwargs = dict(num_samples=2, max_new_tokens=8, do_sample=True, seed=5, batch_size=8, return_logprobs=True)
    whole = generate(model, tok, PROMPTS, **kwargs)
    monkeypatch.setattr(G, "LOGITS_CHUNK_BYTES", 1)  # one row at a time
    assert generate(model, tok, PROMPTS, **kwargs) == whole


# --------------------------------------------------------------------------- stop tokens and padding


def test_stop_tokens_padding_and_texts_from_scripted_continuations(model, tok, monkeypatch):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    words = tok("cat sat on", add_special_tokens=False)["input_ids"]
    rows = [
        words + [eos, pad, pad],  # stopped: the padding generate adds after the stop token is not a token
        [words[0], pad, words[1], eos, pad, pad],  # a pad token the model chose: dropped from the text
        words + words,  # ran into max_new_tokens
    ]
    scripted = torch.tensor(rows)
    monkeypatch.setattr(
        model, "generate", lambda input_ids, **kw: torch.cat([input_ids, scripted[: len(input_ids)]], 1)
    )
    samples = generate(model, tok, ["the", "a dog", "the cat"], max_new_tokens=6, batch_size=3)
    assert [s.token_ids for s in samples] == [words + [eos], rows[1][:4], words + words]
    assert [s.finished for s in samples] == [True, True, False]
    assert [s.num_tokens for s in samples] == [3, 2, 6]
    assert [s.text for s in samples] == ["cat sat on", "cat sat", "cat sat on cat sat on"]
    # another stop token
    samples = generate(model, tok, ["the"], max_new_tokens=6, eos_token_id=words[1])
    assert samples[0].token_ids == words[:2] and samples[0].text == "cat" and samples[0].finished


def test_batches_hold_batch_size_sequences(model, tok):
    calls = []
    original = model.generate

    def counting(**kwargs):
        calls.append(kwargs["input_ids"].shape[0] * kwargs["num_return_sequences"])
        return original(**kwargs)

    model.generate = counting
    try:
        generate(model, tok, PROMPTS * 2, num_samples=3, max_new_tokens=2, do_sample=True, seed=0, batch_size=7)
        assert calls == [6, 6, 6, 6]  # 7 // 3 = 2 prompts per call
        calls.clear()
        generate(model, tok, PROMPTS, num_samples=4, max_new_tokens=2, do_sample=True, seed=0, batch_size=2)
        assert calls == [4, 4, 4, 4]  # never fewer than one prompt per call
    finally:
        del model.generate


def test_generation_kwargs_override(model, tok):
    forced = generate(
        model, tok, PROMPTS, max_new_tokens=3, generation_kwargs={"forced_eos_token_id": tok.eos_token_id}
    )
    assert all(s.finished and len(s.token_ids) <= 3 for s in forced)


# --------------------------------------------------------------------------- several processes, the context, bad input


@pytest.mark.parametrize("num_prompts, world", [(5, 2), (2, 3), (7, 7), (1, 4), (16, 3)])
def test_split_prompts_gives_every_rank_the_same_number_of_jobs(num_prompts, world):
    shares = [split_prompts(num_prompts, rank, world) for rank in range(world)]
    assert len({len(jobs) for jobs, _ in shares}) == 1
    kept = sorted(i for jobs, k in shares for i in jobs[:k])
    assert kept == list(range(num_prompts))
    assert all(0 <= i < num_prompts for jobs, _ in shares for i in jobs)


def test_fit_to_context_keeps_the_last_tokens(model, tok, caplog):
    long = list(range(5, 65))  # 60 tokens; context 64
    with caplog.at_level(logging.WARNING, logger="qdc_trainer.generation"):
        fitted = fit_to_context([long, [5, 6]], model, tok, max_new_tokens=16)
    assert fitted == [long[-48:], [5, 6]]
    assert "1 prompt(s) (first: 0) exceed the model's context (64) minus max_new_tokens (16)" in caplog.text
    with pytest.raises(ValueError, match="leaves no room"):
        fit_to_context([[5]], model, tok, max_new_tokens=64)


def test_bad_input(model, tok):
    with pytest.raises(TypeError, match="not one string"):
        generate(model, tok, "the cat")
    with pytest.raises(TypeError, match="prompt 1"):
        generate(model, tok, ["the", 3])
    with pytest.raises(ValueError, match=r"prompt\(s\) \[1\] encode to no tokens"):
        generate(model, tok, [[5], []])
    for name in ("num_samples", "max_new_tokens", "batch_size"):
        with pytest.raises(ValueError, match=name):
            generate(model, tok, PROMPTS, **{name: 0})
    assert isinstance(generate(model, tok, PROMPTS[:1], max_new_tokens=1)[0], Sample)
