"""Builders the tests share: a word-level tokenizer trained on the fly, tiny random-weight GPT-2 models (no
network), seeded datasets of random texts with the score columns the sampler reads, and quiet CPU training
arguments. Import them as ``from helpers import build_gpt2`` (tests/ is on ``sys.path``: pytest puts the
folder of tests/conftest.py there, and the distributed scripts add it themselves)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import TrainerCallback

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


def quiet_cpu_args() -> dict:
    """The training arguments every builder here starts from (a new dict): batch 4, no saving, no reporting, on
    the CPU, no progress bars."""
    return dict(per_device_train_batch_size=4, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)


def cpu_training_args(output_dir, **overrides):
    """Quiet, seeded ``TrainingArguments`` on the CPU (:func:`quiet_cpu_args`, seed 0, learning rate 1e-3);
    ``overrides`` win."""
    from transformers import TrainingArguments

    defaults = dict(output_dir=str(output_dir), **quiet_cpu_args(), seed=0, learning_rate=1e-3)
    return TrainingArguments(**{**defaults, **overrides})


def cpu_sft_args(output_dir, **overrides):
    """Quiet TRL ``SFTConfig`` on the CPU (:func:`quiet_cpu_args`, 32 tokens); ``overrides`` win. The seed and learning
    rate are TRL's defaults."""
    from trl import SFTConfig

    defaults = dict(output_dir=str(output_dir), **quiet_cpu_args(), max_length=32)
    return SFTConfig(**{**defaults, **overrides})


WORDS = "the cat sat on mat a dog ran in park first add to get then multiply by answer is".split()
"""The words of :func:`random_text_dataset`'s texts (every one is in :func:`build_tokenizer`'s vocabulary)."""


def random_text_dataset(n, *, seed=0, lengths=(3, 10), clusters=None, labels=False):
    """``n`` seeded texts of random :data:`WORDS`, from ``lengths[0]`` to ``lengths[1] - 1`` words each.

    With ``clusters``: the score columns the sampler reads, a random ``quality`` in [0, 1) and a ``cluster`` id
    (``i % clusters``); with ``labels``: a ``label`` (``i % 2``). The texts do not depend on the other columns."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    columns = {"text": [" ".join(rng.choice(WORDS, size=rng.integers(*lengths))) for _ in range(n)]}
    if clusters is not None:
        columns.update(quality=rng.random(n), cluster=np.arange(n) % clusters)
    if labels:
        columns["label"] = np.arange(n) % 2
    return Dataset.from_dict(columns)


def tokenized(dataset, tokenizer, *, keep_text=False):
    """``dataset`` with its ``text`` column tokenized in batches (``input_ids``, ``attention_mask``); the text
    column is dropped unless ``keep_text``."""
    return dataset.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=None if keep_text else ["text"])


def tiny_trainer(output_dir, tokenizer, max_steps, *, num_examples=64, **training_args):
    """A plain ``Trainer`` on a tiny GPT-2 over ``num_examples`` copies of one sentence, for ``max_steps`` steps
    (:func:`quiet_cpu_args`; ``training_args`` add to or override its arguments). With
    :class:`LogSeries` it drives a collapse detector."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    defaults = dict(output_dir=str(output_dir), **quiet_cpu_args(), max_steps=max_steps, logging_steps=1000)
    return Trainer(
        model=build_gpt2(tokenizer),
        args=TrainingArguments(**{**defaults, **training_args}),
        train_dataset=tokenized(Dataset.from_dict({"text": ["the cat sat on the mat"] * num_examples}), tokenizer),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )


class LogSeries(TrainerCallback):
    """Logs ``values[step - 1]`` under ``key`` at the end of every step: a stand-in for the generation monitor."""

    def __init__(self, trainer, key, values):
        self.trainer, self.key, self.values = trainer, key, values

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.log({self.key: self.values[state.global_step - 1]})


def build_gpt2_classifier(tokenizer, num_labels, seed: int = 0, **kwargs):
    """A 2-layer, 32-wide ``GPT2ForSequenceClassification`` with random weights (seeded): a reward model."""
    from transformers import GPT2ForSequenceClassification

    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(tiny_gpt2_config(tokenizer, num_labels=num_labels, **kwargs)).eval()


def token_ids(tokenizer, text: str) -> list[int]:
    """The token ids of ``text``, without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def completion_loss(model, tokenizer, prompt: str, completion: str) -> float:
    """The model's own cross-entropy (``labels=``) on the completion's tokens after ``[bos] + prompt``."""
    p = token_ids(tokenizer, prompt) if prompt else []
    c = token_ids(tokenizer, completion)
    seq = torch.tensor([[tokenizer.bos_token_id] + p + c])
    labels = seq.clone()
    labels[0, : 1 + len(p)] = -100
    with torch.no_grad():
        return float(model(input_ids=seq, labels=labels).loss)
