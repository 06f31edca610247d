"""The tiny tokenizer (:func:`build_tokenizer`) and GPT-2 (:func:`tiny_model_config`, :func:`build_model`) that
learn the arithmetic task on a CPU, and the training settings that teach it (:data:`RECOMMENDED_TRAINING`)."""

from __future__ import annotations

import re
from typing import Any

from .problems import _ALL_TEMPLATES, Problem, render

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
"""Padding, unknown, beginning- and end-of-sequence tokens (ids 0 to 3)."""

MAX_LENGTH = 256
"""Context size of :func:`tiny_model_config` and ``model_max_length`` of :func:`build_tokenizer`; the longest
example of the default out-of-distribution split (5 operations) is well under half of it."""

_SPACE = "\u2581"  # stands for a space inside the tokenizer, as in SentencePiece
_PIECE = rf"\n|{_SPACE}?[0-9]|{_SPACE}?[A-Za-z]+|{_SPACE}?[^{_SPACE}0-9A-Za-z\n]|{_SPACE}"


def _vocabulary() -> list[str]:
    """Every piece the task's texts can hold: template words, punctuation, operators and single digits,
    each with and without a leading space."""
    sample = Problem(4, (("+", 3), ("-", 2), ("*", 5)))
    texts = ["".join(render(sample, t)) for t in range(len(_ALL_TEMPLATES))]
    texts.append("0123456789 +-*()=.,:?#")
    pieces = set()
    for text in texts:
        for piece in re.findall(_PIECE, text.replace(" ", _SPACE)):
            core = piece.lstrip(_SPACE)
            if core and core != "\n":
                pieces.update({core, _SPACE + core})
    for digit in "0123456789":
        pieces.update({digit, _SPACE + digit})
    pieces.update({"\n", _SPACE})
    return sorted(pieces)


def build_tokenizer(model_max_length: int = MAX_LENGTH) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over the task's fixed vocabulary (136 tokens), built locally.

    Numbers are split into single digits, a space is part of the token after it
    (``" 57"`` is ``'▁5', '7'``) and decoding joins the tokens back, so
    ``decode(encode(text))`` gives ``text`` exactly for any text of the task.
    Encoding adds ``<bos>`` in front and nothing at the end (append
    ``tokenizer.eos_token`` to training texts). Words outside the vocabulary
    become ``<unk>``. It saves and loads with ``save_pretrained`` /
    ``AutoTokenizer.from_pretrained``.

    >>> tok = build_tokenizer()
    >>> ids = tok("What is 12 + 7?\\n").input_ids
    >>> tok.convert_ids_to_tokens(ids)
    ['<bos>', 'What', '▁is', '▁1', '2', '▁+', '▁7', '?', '\\n']
    >>> tok.decode(ids, skip_special_tokens=True)
    'What is 12 + 7?\\n'
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *_vocabulary()])}
    pad, unk, bos, eos = SPECIAL_TOKENS
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.normalizer = normalizers.Replace(" ", _SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace(_SPACE, " "), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def tiny_model_config(tokenizer: Any, **overrides: Any) -> Any:
    """A ``GPT2Config`` for the task: 4 layers, 128 wide, 4 heads, :data:`MAX_LENGTH` positions, no dropout,
    the tokenizer's vocabulary and special tokens. Any field can be overridden.

    >>> cfg = tiny_model_config(build_tokenizer(), n_layer=2)
    >>> cfg.n_layer, cfg.n_embd, cfg.n_positions, cfg.vocab_size == len(build_tokenizer())
    (2, 128, 256, True)
    """
    from transformers import GPT2Config

    defaults: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        n_positions=MAX_LENGTH,
        n_embd=128,
        n_layer=4,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2Config(**{**defaults, **overrides})


def build_model(tokenizer: Any, seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised ``GPT2LMHeadModel`` of :func:`tiny_model_config` (about 0.8M parameters).

    The initialisation depends only on ``seed``; the global torch random state is left untouched.

    >>> tok = build_tokenizer()
    >>> a, b = build_model(tok, seed=1), build_model(tok, seed=1)
    >>> bool((a.transformer.wte.weight == b.transformer.wte.weight).all())
    True
    """
    import torch
    from transformers import GPT2LMHeadModel

    config = tiny_model_config(tokenizer, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


RECOMMENDED_TRAINING: dict[str, Any] = dict(
    learning_rate=3e-3,
    max_steps=1500,
    per_device_train_batch_size=32,
    warmup_steps=50,
    lr_scheduler_type="cosine",
    weight_decay=0.0,
)
"""``TrainingArguments`` settings that teach the default task (``make_splits()``: 20,000 training examples) to
:func:`build_model` from scratch, with the prompt masked out of the loss (:func:`tokenize_examples` with
``DataCollatorForSeq2Seq``, or TRL's completion-only loss).

With ``torch.set_num_threads(2)`` on two CPU cores the 1,500 steps take about 140 s (about 10 steps/s); greedy
decoding then solves about 89% of the validation problems (every step and the answer right) and about 24% of the
out-of-distribution ones of kind ``"templates"`` (4% after training on one template only). Longer chains
(``"ops"``) and larger operands (``"operands"``) stay near 0%: the model does not extrapolate in length or
operand size. Noise 0.3 instead of 0.1 costs about 18 points of validation accuracy. A learning rate of 5e-3, a
loss on the prompt tokens too, or batches of 64 for fewer steps in the same time each cost 15 to 30 points.
"""
