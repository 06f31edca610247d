"""Text data of any task: prompt and completion pairs tokenized for causal-language-model training.

Nothing here knows a task: :func:`tokenize_examples` works on any ``prompt`` / ``completion`` columns with any
tokenizer, and :func:`tokenize_dataset` maps it over a ``datasets.Dataset`` keeping the score columns that
:class:`~qdc_trainer.QDCSampler` reads. The recipe runner (:mod:`qdc_trainer.cli.run`) uses it for every data
set, the built-in arithmetic task re-exports :func:`tokenize_examples`, and the self-improvement experiment
uses it with ``mask_prompt=False``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SCORE_COLUMNS", "tokenize_dataset", "tokenize_examples"]

SCORE_COLUMNS = ("quality", "complexity", "cluster")
"""The columns :func:`qdc_trainer.metrics.score_dataset` adds; :func:`tokenize_dataset` keeps them."""


def tokenize_examples(
    batch: Mapping[str, Any],
    tokenizer: Any,
    *,
    mask_prompt: bool = True,
    add_eos: bool = True,
    max_length: int | None = None,
) -> dict[str, Any]:
    """``input_ids``, ``attention_mask`` and ``labels`` of examples with ``prompt`` and ``completion``.

    For ``Dataset.map(tokenize_examples, batched=True, fn_kwargs={"tokenizer": tok})``
    (a single example works too). The sequence is the prompt as the tokenizer encodes it
    (with its special tokens: ``<bos> prompt``), the completion, then ``<eos>``
    (``add_eos``); with ``mask_prompt`` the prompt's labels are ``-100`` so the loss is on
    the completion (and ``<eos>``) only. Pad the batches with a collator that pads
    ``labels`` with ``-100``, e.g. ``DataCollatorForSeq2Seq(tokenizer)``.

    >>> from qdc_trainer.tasks.arithmetic import build_tokenizer
    >>> tok = build_tokenizer()
    >>> out = tokenize_examples({"prompt": "What is 2 + 3?\\n", "completion": "2 + 3 = 5\\nThe answer is 5."}, tok)
    >>> n = len(tok("What is 2 + 3?\\n").input_ids)
    >>> out["labels"][:n] == [-100] * n, out["labels"][n:] == out["input_ids"][n:]
    (True, True)
    >>> tok.decode(out["input_ids"])
    '<bos>What is 2 + 3?\\n2 + 3 = 5\\nThe answer is 5.<eos>'
    """
    single = isinstance(batch["prompt"], str)
    prompts = [batch["prompt"]] if single else list(batch["prompt"])
    completions = [batch["completion"]] if single else list(batch["completion"])
    p_ids = tokenizer(prompts)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for p, c in zip(p_ids, c_ids):
        c = list(c) + ([tokenizer.eos_token_id] if add_eos else [])
        ids = list(p) + c
        labels = ([-100] * len(p) if mask_prompt else list(p)) + c
        if max_length is not None:
            ids, labels = ids[:max_length], labels[:max_length]
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(labels)
    return {k: v[0] for k, v in out.items()} if single else out


def tokenize_dataset(
    dataset: Any,
    tokenizer: Any,
    *,
    max_length: int | None = None,
    mask_prompt: bool = True,
    keep: Sequence[str] = SCORE_COLUMNS,
    desc: str | None = "tokenizing",
) -> Any:
    """``dataset`` (``prompt`` and ``completion`` columns) tokenized by :func:`tokenize_examples`, in one batched
    ``map``: the text columns are replaced by ``input_ids``, ``attention_mask`` and ``labels``; the columns named in
    ``keep`` that the dataset has (by default the scores) stay.

    >>> from datasets import Dataset
    >>> from qdc_trainer.tasks.arithmetic import build_tokenizer
    >>> ds = Dataset.from_dict({"prompt": ["What is 2 + 3?\\n"], "completion": ["Answer: 5"], "quality": [1.0],
    ...                         "note": ["dropped"]})
    >>> sorted(tokenize_dataset(ds, build_tokenizer(), desc=None).column_names)
    ['attention_mask', 'input_ids', 'labels', 'quality']
    """
    missing = [c for c in ("prompt", "completion") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset has no column(s) {missing}; it has {dataset.column_names}")
    return dataset.map(
        tokenize_examples,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "mask_prompt": mask_prompt},
        remove_columns=[c for c in dataset.column_names if c not in keep],
        desc=desc,
    )
