"""Data sets of the arithmetic task: :func:`generate_examples`, :func:`make_dataset` and :func:`make_splits`
(noisy ``train``, clean in-distribution ``validation``, clean out-of-distribution ``test_ood``)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .problems import (
    _ALL_TEMPLATES,
    TEMPLATES,
    ArithmeticConfig,
    _corrupt,
    _held_out,
    _sample_problem,
    ood_config,
    render,
)

_COLUMNS = (
    "prompt",
    "completion",
    "text",
    "answer",
    "num_ops",
    "template",
    "operators",
    "expression",
    "corrupted",
    "corruption",
)


def generate_examples(
    n: int,
    config: ArithmeticConfig | None = None,
    seed: int | None = None,
    *,
    held_out: bool | None = None,
    templates: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """``n`` examples drawn with ``seed`` (default: ``config.seed``); the same arguments give the same examples,
    and the first ``m`` of ``n`` examples are the ``m`` examples of a shorter call.

    Each example is a dict with ``prompt``, ``completion``, ``text`` (``prompt +
    completion``, no end-of-sequence token), ``answer`` (the true answer, also for
    a corrupted example), ``num_ops`` (complexity), ``template`` (0 to 7:
    :data:`TEMPLATES`, 8 to 11: :data:`OOD_TEMPLATES`), ``operators`` (the operators used, in order),
    ``expression``, ``corrupted`` and ``corruption`` (``""``, ``"step"``: one step's
    result is off by 1 to 3 and the later steps carry the error, or ``"answer"``:
    the steps are right but the final answer is off by 1 to 3).

    ``held_out`` selects problems by a hash of their expression: ``False`` keeps
    only problems outside the ``config.held_out`` share (training), ``True`` only
    problems inside it (validation), ``None`` any problem. ``templates`` lists the
    template indices to draw from (default: the first ``config.num_templates``;
    8 to 11 are the :data:`OOD_TEMPLATES`).

    >>> ex = generate_examples(2, ArithmeticConfig(max_ops=2, noise=0.0), seed=1)
    >>> sorted(ex[0])
    ['answer', 'completion', 'corrupted', 'corruption', 'expression', 'num_ops', 'operators', 'prompt',
     'template', 'text']
    >>> ex == generate_examples(2, ArithmeticConfig(max_ops=2, noise=0.0), seed=1)
    True
    >>> from qdc_trainer.tasks.arithmetic import verify
    >>> all(verify(e["prompt"], e["completion"]) == 1.0 for e in ex)
    True
    """
    config = ArithmeticConfig() if config is None else config
    if not isinstance(config, ArithmeticConfig):
        raise TypeError(f"config must be an ArithmeticConfig, got {type(config).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} must be an int >= 0")
    seed = config.seed if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an int or None")
    if held_out is True and config.held_out == 0:
        raise ValueError("held_out=True selects problems of the held-out share, but config.held_out is 0")
    if templates is None:
        templates = range(config.num_templates)
    templates = list(templates)
    last = len(_ALL_TEMPLATES) - 1
    if not templates or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= last for t in templates):
        raise ValueError(f"templates={templates!r} must be a non-empty list of template indices in 0..{last}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        num_ops = rng.randint(config.min_ops, config.max_ops)
        for _attempt in range(100_000):
            problem = _sample_problem(rng, config, num_ops)
            if held_out is None or _held_out(problem, config.held_out) == held_out:
                break
        else:
            where = "inside" if held_out else "outside"
            raise ValueError(f"no {num_ops}-operation problem {where} the held-out share was found")
        template = templates[rng.randrange(len(templates))]
        corruption, equations, answer = "", None, None
        if config.noise > 0 and rng.random() < config.noise:
            corruption, equations, answer = _corrupt(rng, problem)
        prompt, completion = render(problem, template, equations=equations, answer=answer)
        out.append(
            {
                "prompt": prompt,
                "completion": completion,
                "text": prompt + completion,
                "answer": problem.answer,
                "num_ops": problem.num_ops,
                "template": template,
                "operators": problem.operators,
                "expression": problem.expression,
                "corrupted": bool(corruption),
                "corruption": corruption,
            }
        )
    return out


def make_dataset(
    n: int,
    config: ArithmeticConfig | None = None,
    seed: int | None = None,
    *,
    held_out: bool | None = None,
    templates: Sequence[int] | None = None,
) -> Any:
    """:func:`generate_examples` as a ``datasets.Dataset``.

    >>> make_dataset(3, ArithmeticConfig(), seed=0).num_rows
    3
    """
    from datasets import Dataset

    rows = generate_examples(n, config, seed, held_out=held_out, templates=templates)
    if not rows:
        return Dataset.from_dict({c: [] for c in _COLUMNS})
    return Dataset.from_list(rows)


def make_splits(
    config: ArithmeticConfig | None = None,
    train_size: int = 20_000,
    eval_size: int = 200,
    ood_size: int = 200,
    seed: int | None = None,
    *,
    ood: str = "templates",
    extra_ops: int = 2,
) -> Any:
    """A ``datasets.DatasetDict`` with three splits, each from its own random stream:

    - ``train``: ``train_size`` examples from ``config``, ``config.noise`` of them
      corrupted, never a problem of the held-out share;
    - ``validation``: ``eval_size`` clean in-distribution examples (same ranges,
      templates and operators) whose problems are all in the held-out share, so
      none of them occurs in ``train`` in any phrasing;
    - ``test_ood``: ``ood_size`` clean out-of-distribution examples of kind ``ood``:

      - ``"templates"`` (default): problems drawn like the validation ones (same
        ranges, held-out share) but phrased with the :data:`OOD_TEMPLATES`, which
        training never uses: only the wording of the prompt is new;
      - ``"ops"``: chains of ``max_ops + 1`` to ``max_ops + extra_ops`` operations;
      - ``"operands"``: every operand above the training range (see :func:`ood_config`);
      - ``"both"``: longer chains of larger operands.

    >>> splits = make_splits(ArithmeticConfig(), 50, 10, 10, seed=0)
    >>> {name: split.num_rows for name, split in splits.items()}
    {'train': 50, 'validation': 10, 'test_ood': 10}
    >>> min(splits["test_ood"]["template"]) >= len(TEMPLATES)
    True
    >>> ops = make_splits(ArithmeticConfig(), 50, 10, 10, seed=0, ood="ops")
    >>> min(ops["test_ood"]["num_ops"]) > max(ops["train"]["num_ops"])
    True
    """
    from datasets import DatasetDict

    config = ArithmeticConfig() if config is None else config
    if not isinstance(config, ArithmeticConfig):
        raise TypeError(f"config must be an ArithmeticConfig, got {type(config).__name__}")
    seed = config.seed if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an int or None")
    ood_cfg = ood_config(config, ood, extra_ops)
    clean = replace(config, noise=0.0)

    def stream(name: str) -> int:
        return zlib.crc32(f"{seed}/{name}".encode())

    held_train = False if config.held_out > 0 else None
    held_eval = True if config.held_out > 0 else None
    if ood == "templates":
        ood_split = make_dataset(
            ood_size,
            ood_cfg,
            stream("test_ood"),
            held_out=held_eval,
            templates=range(len(TEMPLATES), len(_ALL_TEMPLATES)),
        )
    else:
        ood_split = make_dataset(ood_size, ood_cfg, stream("test_ood"))
    return DatasetDict(
        {
            "train": make_dataset(train_size, config, stream("train"), held_out=held_train),
            "validation": make_dataset(eval_size, clean, stream("validation"), held_out=held_eval),
            "test_ood": ood_split,
        }
    )
