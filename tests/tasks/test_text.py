"""Task-independent tokenizing of prompt and completion data (what the recipe runner uses for any dataset)."""

from __future__ import annotations

import pytest
from datasets import Dataset
from helpers import build_tokenizer

from qdc_trainer.tasks.text import SCORE_COLUMNS, tokenize_dataset, tokenize_examples


def test_the_prompt_is_masked_and_the_scores_kept_with_any_tokenizer():
    tok = build_tokenizer()  # a word-level tokenizer, not the arithmetic task's
    ds = Dataset.from_dict(
        {
            "prompt": ["the cat sat", "a dog ran"],
            "completion": ["on the mat", "in the park"],
            "quality": [1.0, 0.5],
            "cluster": [0, 1],
            "source": ["x", "y"],
        }
    )
    out = tokenize_dataset(ds, tok, desc=None)
    assert sorted(out.column_names) == ["attention_mask", "cluster", "input_ids", "labels", "quality"]
    assert set(SCORE_COLUMNS) >= {"quality", "cluster"}
    row = out[0]
    n_prompt = len(tok("the cat sat").input_ids)
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:] and row["input_ids"][-1] == tok.eos_token_id
    whole = tokenize_dataset(ds, tok, mask_prompt=False, max_length=3, desc=None)[0]
    assert whole["labels"] == whole["input_ids"] and len(whole["input_ids"]) == 3
    assert tokenize_examples({"prompt": "the cat sat", "completion": "on the mat"}, tok) == {
        k: v for k, v in row.items() if k in ("input_ids", "attention_mask", "labels")
    }


def test_a_dataset_without_prompt_or_completion_is_named():
    with pytest.raises(ValueError, match=r"no column\(s\) \['completion'\]"):
        tokenize_dataset(Dataset.from_dict({"prompt": ["a"]}), build_tokenizer(), desc=None)
