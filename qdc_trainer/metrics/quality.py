"""Quality scorers: callables from (prompts, completions) to one float per pair.

Every scorer has a ``higher_is_better`` attribute so that code which combines
scores (the sampler, selection) knows the direction. Model-based scorers batch,
run under ``torch.inference_mode`` on the model's device, restore the model's
train/eval mode, and show a progress bar when there is more than one batch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import _lm

__all__ = [
    "Scorer",
    "VerifierScorer",
    "RewardModelScorer",
    "PerplexityScorer",
    "JudgeScorer",
    "extract_final_answer",
]


@runtime_checkable
class Scorer(Protocol):
    """What a quality scorer looks like: ``scorer(prompts, completions) -> np.ndarray``."""

    higher_is_better: bool

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray: ...


_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def extract_final_answer(text: str) -> str | None:
    """The final answer of a solution: the first number after the last ``####`` or "answer is"/"answer:"
    (or the text there when it holds no number), else the last number; ``None`` when there is none.
    Thousands separators are removed.

    >>> extract_final_answer("3 + 4 = 7. The answer is 7.")
    '7'
    >>> extract_final_answer("#### 42")
    '42'
    >>> extract_final_answer("so the total is 1,234")
    '1234'
    >>> extract_final_answer("no digits here") is None
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    for marker in ("####", "answer is", "answer:", "Answer:"):
        pos = text.rfind(marker)
        if pos >= 0:
            tail = text[pos + len(marker) :].strip().rstrip(".")
            numbers = _NUMBER.findall(tail)
            return numbers[0].replace(",", "") if numbers else (tail or None)
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


class VerifierScorer:
    """Quality from a user's verifier function ``fn(prompt, completion) -> bool | float``.

    Booleans become 1.0 / 0.0. A non-finite value or an exception names the
    offending pair.

    >>> answers = {"2+2": "4"}
    >>> scorer = VerifierScorer(lambda p, c: extract_final_answer(c) == answers[p])
    >>> scorer(["2+2", "2+2"], ["2 + 2 = 4", "It is 5"]).tolist()
    [1.0, 0.0]
    """

    higher_is_better = True

    def __init__(self, fn: Callable[[str, str], bool | float], progress: bool | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable (prompt, completion) -> bool | float, got {type(fn).__name__}")
        self.fn = fn
        self.progress = progress

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        prompts, completions = _lm.check_pairs(prompts, completions)
        show = len(completions) > 1000 if self.progress is None else self.progress
        out = np.empty(len(completions))
        for i in tqdm(range(len(completions)), desc="Verifying", disable=not show):
            try:
                value = self.fn(prompts[i], completions[i])
            except Exception as err:
                raise RuntimeError(f"the verifier failed on pair {i} (prompt {prompts[i][:60]!r}): {err}") from err
            try:
                if isinstance(value, (str, bytes)):
                    raise TypeError
                value = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"the verifier returned {type(value).__name__} for pair {i}; return a bool or a number"
                ) from None
            if not math.isfinite(value):
                raise ValueError(f"the verifier returned {value} for pair {i}; return a finite number")
            out[i] = value
        return out


class RewardModelScorer:
    """Quality from a reward model (an ``AutoModelForSequenceClassification``).

    Each pair is encoded with the tokenizer's chat template (a user turn and an
    assistant turn) when it has one, otherwise as a text pair. The score is the
    logit when the model has one label; with several labels it is the softmax
    probability of ``positive_label`` (default: the last label).

    Args:
        model: a sequence-classification model.
        tokenizer: its tokenizer.
        batch_size: pairs per forward pass.
        max_length: truncation length (default: the model's context size).
        positive_label: label index whose probability is the score, for multi-label models.
        progress: show a progress bar (default: when there is more than one batch).
    """

    higher_is_better = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        positive_label: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.progress = batch_size, progress
        self.max_length = max_length or _lm._context_size(model) or 512
        num_labels = int(getattr(model.config, "num_labels", 1))
        if positive_label is not None and not 0 <= positive_label < num_labels:
            raise ValueError(f"positive_label={positive_label} but the model has {num_labels} label(s)")
        self.positive_label = num_labels - 1 if positive_label is None else positive_label
        self.num_labels = num_labels

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        prompts, completions = _lm.check_pairs(prompts, completions)
        device = _lm.model_device(self.model)
        chat = getattr(self.tokenizer, "chat_template", None)
        out = []
        with _lm.eval_mode(self.model):
            for idx in _lm.batches(len(completions), self.batch_size, self.progress, "Reward model"):
                p = [prompts[i] for i in idx]
                c = [completions[i] for i in idx]
                if chat:
                    texts = [
                        self.tokenizer.apply_chat_template(
                            [{"role": "user", "content": a}, {"role": "assistant", "content": b}], tokenize=False
                        )
                        for a, b in zip(p, c)
                    ]
                    enc = self.tokenizer(
                        texts,
                        padding=True,
                        truncation=True,
                        max_length=self.max_length,
                        return_tensors="pt",
                        add_special_tokens=False,  # the chat template already holds them
                    )
                else:
                    enc = self.tokenizer(
                        p, c, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                    )
                empty = (enc["attention_mask"].sum(dim=1) == 0).nonzero().flatten().tolist()
                if empty or enc["input_ids"].shape[1] == 0:
                    first = idx.start + (empty[0] if empty else 0)
                    raise ValueError(f"pair {first} encodes to no token (empty prompt and completion); drop it first")
                logits = self.model(**{k: v.to(device) for k, v in enc.items()}).logits.float()
                if self.num_labels == 1:
                    score = logits[:, 0]
                else:
                    score = torch.softmax(logits, dim=-1)[:, self.positive_label]
                out.append(score.cpu().double().numpy())
        return np.concatenate(out) if out else np.zeros(0)


class PerplexityScorer:
    """Perplexity of each completion given its prompt under a reference causal LM (lower is better).

    Uses the same computation as :func:`qdc_trainer.metrics.sequence_perplexity`.
    ``higher_is_better`` is False.
    """

    higher_is_better = False

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.kwargs = dict(batch_size=batch_size, max_length=max_length, progress=progress)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return np.exp(
            _lm.mean_completion_nll(self.model, self.tokenizer, prompts, completions, desc="Perplexity", **self.kwargs)
        )


DEFAULT_JUDGE_TEMPLATE = (
    "Rate the quality of the response to the instruction on a scale from 1 to {levels}.\n"
    "### Instruction:\n{prompt}\n### Response:\n{completion}\n### Score (1-{levels}): "
)


class JudgeScorer:
    """Expected score from a causal LM judge's probabilities over the tokens "1".."N" (DEITA's method).

    The pair is written into ``template`` (fields ``{prompt}``, ``{completion}``,
    ``{levels}``); the judge's next-token logits at the end of it are restricted
    to the tokens "1" .. str(levels) and normalised with a softmax, and the score
    is ``sum_k k * p_k``, a value in [1, levels] (Liu et al., 2024, "What makes
    good data for alignment?", Section 2.3).

    Each level must be a single token of the judge's vocabulary; otherwise the
    constructor raises and names the level.
    """

    higher_is_better = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        levels: int = 6,
        template: str = DEFAULT_JUDGE_TEMPLATE,
        batch_size: int = 8,
        max_length: int | None = None,
        progress: bool | None = None,
    ) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an int >= 2, got {levels!r}")
        for field_name in ("{prompt}", "{completion}"):
            if field_name not in template:
                raise ValueError(f"template must contain {field_name}")
        self.model, self.tokenizer, self.levels, self.template = model, tokenizer, levels, template
        self.kwargs = dict(batch_size=batch_size, max_length=max_length, progress=progress)
        self.level_token_ids = torch.tensor([self._single_token(str(k)) for k in range(1, levels + 1)])

    def _single_token(self, text: str) -> int:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if len(ids) == 1 and ids[0] != unk:
            return int(ids[0])
        token_id = self.tokenizer.convert_tokens_to_ids(text)
        if isinstance(token_id, int) and token_id != unk:
            return token_id
        raise ValueError(
            f"the score level {text!r} is not a single known token for this tokenizer ({ids}); use fewer levels"
        )

    def probabilities(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """The judge's distribution over the levels, shape (n, levels)."""
        prompts, completions = _lm.check_pairs(prompts, completions)
        texts = [self.template.format(prompt=p, completion=c, levels=self.levels) for p, c in zip(prompts, completions)]
        logits = _lm.last_token_logits(self.model, self.tokenizer, texts, desc="Judge", **self.kwargs)
        if len(texts) == 0:
            return np.zeros((0, self.levels))
        return torch.softmax(logits[:, self.level_token_ids], dim=-1).double().numpy()

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        probs = self.probabilities(prompts, completions)
        return probs @ np.arange(1, self.levels + 1, dtype=np.float64)
