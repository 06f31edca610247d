"""The one sampling loop of the library: prompts in, samples out (left-padded batches, a forked RNG, the model's
state restored), with optional per-token entropy and log-probabilities.

:func:`generate` is what the generation monitor, the arithmetic task's evaluation and the self-improvement
experiment call; :func:`split_prompts` and :func:`fit_to_context` are the pieces a caller running under several
processes or near the context limit needs.

>>> from qdc_trainer.tasks.arithmetic import build_model, build_tokenizer
>>> tok = build_tokenizer()
>>> model = build_model(tok, n_layer=1)
>>> samples = generate(model, tok, ["What is 2 + 3?\\n", "Compute 4 * 2.\\n"], num_samples=2, max_new_tokens=5,
...                    do_sample=True, seed=0, return_logprobs=True)
>>> [s.prompt_index for s in samples]
[0, 0, 1, 1]
>>> all(len(s.logprobs) == len(s.token_ids) <= 5 and isinstance(s.text, str) for s in samples)
True
>>> greedy = generate(model, tok, ["What is 2 + 3?\\n"], max_new_tokens=5)
>>> greedy[0].text == generate(model, tok, [tok("What is 2 + 3?\\n").input_ids], max_new_tokens=5)[0].text
True
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers.utils import logging

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["Sample", "context_length", "fit_to_context", "forked_rng", "generate", "split_prompts"]

logger = logging.get_logger(__name__)

LOGITS_CHUNK_BYTES = 256 * 2**20
"""Float32 logits scored at once by the log-probability pass (rows of the batch are taken in chunks this big)."""


@dataclass
class Sample:
    """One generated continuation of one prompt.

    Attributes:
        prompt_index: position of its prompt in the ``prompts`` given to :func:`generate`.
        token_ids: the generated tokens, up to and including the first stop (end-of-sequence) token; the
            padding ``generate`` adds after it is not included.
        text: the completion, decoded with ``skip_special_tokens=True`` from the tokens before the stop token,
            padding tokens left out.
        num_tokens: how many tokens ``text`` was decoded from.
        finished: whether it ended with a stop token (else it ran into ``max_new_tokens``).
        entropy: with ``return_entropy``, the model's next-token entropy (nats) at each position of
            ``token_ids``, from the logits it sampled from (before temperature or top-p); None when the model's
            output has no logits.
        entropy_sum: the sum of ``entropy`` (float32, computed on the padded batch).
        logprobs: with ``return_logprobs``, the log-probability of each token of ``token_ids`` under a plain
            forward pass of the model (no temperature, top-k or top-p).
        mean_logprob: the mean of ``logprobs`` (float32, computed on the padded batch): the sample's
            confidence, its mean token log-likelihood, end-of-sequence token included.
    """

    prompt_index: int
    token_ids: list[int]
    text: str
    num_tokens: int
    finished: bool
    entropy: list[float] | None = None
    entropy_sum: float | None = None
    logprobs: list[float] | None = None
    mean_logprob: float | None = None


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def forked_rng(seed: int | None, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block in a copy of the random state seeded by ``seed``; the caller's streams are left untouched.

    The CPU generator and the generator of ``device`` (when it is an accelerator) are forked and seeded, so
    sampling on that device is reproducible and training draws the same numbers as without the block.
    ``seed=None`` forks nothing (the block uses and advances the global streams).

    >>> before = torch.random.get_rng_state()
    >>> with forked_rng(3):
    ...     a = torch.rand(2)
    >>> with forked_rng(3):
    ...     b = torch.rand(2)
    >>> bool((a == b).all()), bool((torch.random.get_rng_state() == before).all())
    (True, True)
    """
    if seed is None:
        yield
        return
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
    elif device.type == "cuda":
        with torch.random.fork_rng(devices=[device]):
            torch.random.default_generator.manual_seed(seed)
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
            yield
    else:  # mps, xpu, ...: fork every device of that type, seed through the backend's module
        backend = getattr(torch, device.type, None)
        with torch.random.fork_rng(device_type=device.type):
            torch.random.default_generator.manual_seed(seed)
            if callable(getattr(backend, "manual_seed", None)):
                backend.manual_seed(seed)
            yield


def split_prompts(num_prompts: int, rank: int, world: int) -> tuple[list[int], int]:
    """The prompts one process generates for: ``(indices, kept)``; results for ``indices[kept:]`` are dropped.

    Prompts are dealt round-robin (``rank``, ``rank + world``, ...), and a rank with fewer than
    ``ceil(num_prompts / world)`` repeats one of its own (or prompt 0) to make up the difference, so every rank
    makes the same number of ``generate`` calls: under ZeRO-3 / FSDP each decoding step syncs across ranks, and
    a rank that calls ``generate`` fewer times leaves the others waiting forever.

    >>> split_prompts(5, 0, 2), split_prompts(5, 1, 2), split_prompts(2, 2, 3)
    (([0, 2, 4], 3), ([1, 3, 1], 2), ([0], 0))
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank={rank} and world={world} must satisfy 0 <= rank < world")
    mine = list(range(rank, num_prompts, world))
    padding = math.ceil(num_prompts / world) - len(mine)
    return mine + [mine[0] if mine else 0] * padding, len(mine)


def context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None) -> int | None:
    """The longest sequence the model takes (prompt and generated tokens), from its config, else the
    tokenizer's ``model_max_length``; None when neither says."""
    config = model.config
    text_config = getattr(config, "get_text_config", lambda: config)()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def fit_to_context(
    prompt_ids: Sequence[Sequence[int]],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    max_new_tokens: int,
) -> list[list[int]]:
    """Prompts (token ids) that leave room for ``max_new_tokens`` in the model's context: a longer prompt keeps
    its last tokens (with one warning for all of them). Raises ``ValueError`` when ``max_new_tokens`` alone fills
    the context."""
    encoded = [list(ids) for ids in prompt_ids]
    context = context_length(model, tokenizer)
    if context is None:
        return encoded
    room = context - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of {context} tokens"
        )
    long = [i for i, ids in enumerate(encoded) if len(ids) > room]
    if long:
        logger.warning(
            f"{len(long)} prompt(s) (first: {long[0]}) exceed the model's context ({context}) minus "
            f"max_new_tokens ({max_new_tokens}); their first tokens are cut, the last {room} are kept"
        )
    return [ids[-room:] if len(ids) > room else ids for ids in encoded]


def _encode(tokenizer: Any, prompts: Sequence[str | Sequence[int]]) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError("prompts must be a list of strings or of token id lists, not one string")
    texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    encoded: list[list[int] | None] = [None] * len(prompts)
    if texts:
        for i, ids in zip(texts, tokenizer([prompts[i] for i in texts])["input_ids"]):
            encoded[i] = list(ids)
    for i, prompt in enumerate(prompts):
        if encoded[i] is None:
            ids = prompt.tolist() if callable(getattr(prompt, "tolist", None)) else prompt  # a tensor or an array
            if not isinstance(ids, Sequence) or not all(isinstance(t, numbers.Integral) for t in ids):
                raise TypeError(f"prompt {i} is {type(prompt).__name__}: give a string or a list of token ids")
            encoded[i] = [int(t) for t in ids]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"prompt(s) {empty[:5]} encode to no tokens: nothing to continue from")
    return encoded  # type: ignore[return-value]


def _stop_and_pad(model: Any, tokenizer: Any, eos_token_id: int | Sequence[int] | None) -> tuple[list[int], int]:
    """Stop tokens (the given ones, else the model's generation config's, else the tokenizer's) and the pad id."""
    eos = eos_token_id
    if eos is None:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    stop = [eos] if isinstance(eos, int) else list(eos or [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop[0] if stop else 0)
    return stop, pad


def _logprobs(model: Any, sequences: torch.Tensor, full_mask: torch.Tensor, width: int) -> torch.Tensor:
    """Log-probability of each generated token (``sequences[:, width:]``) under one forward pass.

    Left padding shifts the positions of a shorter prompt's tokens: ``position_ids`` count real tokens only, so
    each row scores as it would alone. The logits are made float32 a chunk of rows at a time.
    """
    positions = (full_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=sequences, attention_mask=full_mask, position_ids=positions).logits
    generated = sequences[:, width:]
    steps = generated.shape[1]
    rows = max(1, LOGITS_CHUNK_BYTES // max(1, 4 * steps * logits.shape[-1]))
    parts = []
    for start in range(0, len(sequences), rows):
        chunk = logits[start : start + rows, width - 1 : -1].float()
        tokens = generated[start : start + rows].unsqueeze(-1)
        parts.append(torch.log_softmax(chunk, -1).gather(-1, tokens).squeeze(-1))
    return torch.cat(parts)


def _decode_batch(
    tokenizer: Any,
    generated: torch.Tensor,
    stop: list[int],
    pad: int,
    entropy: torch.Tensor | None,
    logprobs: torch.Tensor | None,
    mean_logprob: list[float] | None,
    prompt_indices: list[int],
    num_samples: int,
) -> list[Sample]:
    """The samples of one ``generate`` call (rows prompt-major: ``num_samples`` rows per prompt)."""
    if stop:
        is_stop = torch.isin(generated, torch.tensor(stop, device=generated.device))
    else:
        is_stop = torch.zeros_like(generated, dtype=torch.bool)
    active = (is_stop.long().cumsum(1) - is_stop.long()) == 0  # up to and including the first stop token
    lengths = active.sum(1).tolist()
    finished = is_stop.any(1).tolist()
    rows = generated.tolist()
    samples = []
    for row, prompt_index in enumerate(p for p in prompt_indices for _ in range(num_samples)):
        n = lengths[row]
        token_ids = rows[row][:n]
        content = [t for t in token_ids[: n - 1 if finished[row] else n] if t != pad]
        samples.append(
            Sample(
                prompt_index=prompt_index,
                token_ids=token_ids,
                num_tokens=len(content),
                finished=finished[row],
                text=tokenizer.decode(content, skip_special_tokens=True),
                entropy=entropy[row, :n].tolist() if entropy is not None else None,
                entropy_sum=float((entropy[row] * active[row]).sum()) if entropy is not None else None,
                logprobs=logprobs[row, :n].tolist() if logprobs is not None else None,
                mean_logprob=mean_logprob[row] if mean_logprob is not None else None,
            )
        )
    return samples


# --------------------------------------------------------------------------- the loop


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Sequence[int]],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 64,
    seed: int | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    return_entropy: bool = False,
    return_logprobs: bool = False,
    progress: bool | None = None,
    generation_kwargs: dict[str, Any] | None = None,
) -> list[Sample]:
    """Generate ``num_samples`` continuations of each prompt; returns them prompt-major
    (``samples[p * num_samples + j]`` is sample ``j`` of prompt ``p``).

    Prompts are strings (encoded with ``tokenizer(prompts)``, special tokens included) or lists of token ids,
    left-padded by hand in batches (the tokenizer is never modified; ``attention_mask`` is passed, and
    ``generate`` derives the positions from it, so a padded prompt continues as it would alone). Each call
    generates ``batch_size`` sequences at most (``batch_size // num_samples`` prompts, at least one), with
    ``use_cache=True`` (which a ``Trainer`` turns off in the model's config), in eval mode (dropout off, and in
    transformers models activation checkpointing inert, so the cache works and its settings are left as they
    are) under ``torch.no_grad``; the model's training mode is restored afterwards, whatever happens.

    Args:
        model: a decoder-only model with ``generate`` (unwrapped: not the DDP / DeepSpeed wrapper).
        tokenizer: encodes string prompts, decodes the samples, gives the pad and end-of-sequence ids.
        num_samples: continuations per prompt (``num_return_sequences``).
        do_sample: sample at ``temperature`` with ``top_p`` / ``top_k`` (0: off); else greedy decoding.
        seed: sample in a forked random state seeded by this (:func:`forked_rng`): the same seed gives the same
            samples for the same prompts, ``batch_size`` and model, and the caller's random streams are left
            untouched. None: the global streams are used (and advanced), as ``model.generate`` does.
        eos_token_id: stop token(s), also passed to ``generate``. None: the model's generation config decides
            when to stop, and its ``eos_token_id`` (else the tokenizer's) ends the samples' texts.
        return_entropy: record the next-token entropy at each generated position (a forward hook on the model
            computes it from the last position's logits at every decoding step; nothing else is kept).
        return_logprobs: score the finished sequences with one more forward pass per batch (with
            ``position_ids`` that skip the left padding): per-token log-probabilities and their mean.
        progress: a progress bar over the batches (None: when there are two or more); it follows
            ``transformers.utils.logging.disable_progress_bar``.
        generation_kwargs: more keyword arguments for ``model.generate``; they override the ones above.

    Pad id: the tokenizer's, else the first stop token. The multi-process pieces stay with the caller: deal the
    prompts with :func:`split_prompts` (every rank must call this the same number of times with the same
    ``batch_size``) and gather the samples (``accelerate.utils.gather_object``).
    """
    for name, value, low in (
        ("num_samples", num_samples, 1),
        ("max_new_tokens", max_new_tokens, 1),
        ("batch_size", batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an int >= {low}")
    encoded = _encode(tokenizer, prompts)
    stop, pad = _stop_and_pad(model, tokenizer, eos_token_id)
    kwargs: dict[str, Any] = {
        "do_sample": do_sample,
        "max_new_tokens": max_new_tokens,
        "num_return_sequences": num_samples,
        "use_cache": True,
        "pad_token_id": pad,
    }
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
    if eos_token_id is not None:
        kwargs["eos_token_id"] = eos_token_id
    kwargs.update(generation_kwargs or {})
    device = next(model.parameters()).device
    per_call = max(1, batch_size // num_samples)
    starts = range(0, len(encoded), per_call)
    show = len(starts) >= 2 if progress is None else progress

    entropies: list[torch.Tensor] = []
    capturing = False

    def capture(module: Any, args: Any, output: Any) -> None:
        if not capturing:
            return
        logits = output["logits"] if isinstance(output, dict) else getattr(output, "logits", None)
        if logits is not None:
            logp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
            entropies.append(-(logp.exp() * logp).nan_to_num().sum(-1))

    samples: list[Sample] = []
    was_training = model.training
    handle = model.register_forward_hook(capture) if return_entropy else None
    try:
        model.eval()
        with torch.no_grad(), forked_rng(seed, device):
            for start in logging.tqdm(starts, desc="generating", leave=False, disable=not show):
                batch = list(range(start, min(start + per_call, len(encoded))))
                ids = [encoded[i] for i in batch]
                width = max(len(x) for x in ids)
                input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
                mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
                entropies.clear()
                capturing = True
                try:
                    out = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
                finally:
                    capturing = False
                generated = out[:, width:]
                steps = generated.shape[1]
                measured = return_entropy and bool(steps) and len(entropies) >= steps  # no logits: no entropy
                entropy = torch.stack(entropies[:steps], dim=1) if measured else None
                logprobs = mean_logprob = None
                if return_logprobs:
                    is_stop = (
                        torch.isin(generated, torch.tensor(stop, device=generated.device))
                        if stop
                        else torch.zeros_like(generated, dtype=torch.bool)
                    ).long()
                    keep = is_stop.cumsum(1) - is_stop == 0  # generate pads the rows after their stop token
                    prompt_mask = mask.repeat_interleave(num_samples, dim=0) if num_samples > 1 else mask
                    full_mask = torch.cat([prompt_mask, keep.long()], dim=1)
                    logprobs = _logprobs(model, out, full_mask, width)
                    mean_logprob = ((logprobs * keep).sum(1) / keep.sum(1).clamp(min=1)).tolist()
                samples.extend(
                    _decode_batch(tokenizer, generated, stop, pad, entropy, logprobs, mean_logprob, batch, num_samples)
                )
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    return samples
