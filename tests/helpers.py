"""Builders the tests share: a word-level tokenizer trained on the fly and tiny random-weight GPT-2 models
(no network). Import them as ``from helpers import build_gpt2`` (tests/ is on ``sys.path``: pytest puts the
folder of tests/conftest.py there, and the distributed scripts add it themselves)."""

from __future__ import annotations

import torch

CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "first add 2 and 3 to get 5 . then multiply 5 by 4 to get 20 . the answer is 20 .",
    "rate the quality of the response 1 2 3 4 5 6 7 8 9",
    "instruction response score",
]


def build_tokenizer():
    """A word-level tokenizer over a small vocabulary, with BOS/EOS/PAD/UNK tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"])
    tok.train_from_iterator(CORPUS + [" ".join(str(i) for i in range(10))], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_gpt2_config(tokenizer, **kwargs):
    from transformers import GPT2Config

    defaults = dict(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2Config(**{**defaults, **kwargs})  # any field can be overridden (n_layer=4, ...)


def build_gpt2(tokenizer, seed: int = 0, **kwargs):
    """A 2-layer, 32-wide GPT-2 with random weights (seeded)."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(tiny_gpt2_config(tokenizer, **kwargs)).eval()


def cpu_training_args(output_dir, **overrides):
    """Quiet, seeded ``TrainingArguments`` on the CPU (batch 4, no saving, no reporting); ``overrides`` win."""
    from transformers import TrainingArguments

    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        learning_rate=1e-3,
    )
    return TrainingArguments(**{**defaults, **overrides})
