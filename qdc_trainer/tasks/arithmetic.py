"""Arithmetic problems with step-by-step solutions: a synthetic task with controllable quality, diversity and
complexity.

A problem is a chain ``start op1 b1 op2 b2 ...`` evaluated from left to right.
It is written either as an expression with the fewest parentheses that keep that
order under the usual precedence (``(12 + 7) * 3``) or in words (``Start with 12,
add 7, then multiply by 3.``). The solution has one line per operation, an
equation ``a op b = c``, then a final-answer line:

>>> problem = Problem(12, (("+", 7), ("*", 3)))
>>> prompt, completion = render(problem, template=1)
>>> print(prompt + completion)
Compute (12 + 7) * 3.
Step 1: 12 + 7 = 19.
Step 2: 19 * 3 = 57.
Answer: 57
>>> verify(prompt, completion)
1.0

The three QDC controls of :class:`ArithmeticConfig`:

- complexity: the number of operations (``min_ops``..``max_ops``), the operand range
  and the operators;
- diversity: ``num_templates``, how many of the :data:`TEMPLATES` (a prompt
  phrasing together with a solution style) are drawn from;
- quality: ``noise``, the share of training examples with a wrong step or a wrong
  final answer (each such example fails :func:`verify`).

:func:`make_splits` gives a noisy ``train`` split, a clean in-distribution
``validation`` split of problems never seen in training, and a clean
``test_ood`` split (by default the same kind of problems in phrasings that
training never uses; longer chains or larger operands on request).
:func:`build_tokenizer`, :func:`build_model` and :data:`RECOMMENDED_TRAINING` train
a tiny GPT-2 on it from scratch in a few minutes on a CPU.

Text format. The prompt ends with a newline and the completion starts the first
solution line, so ``text = prompt + completion`` and a tokenizer boundary always
falls between them. Numbers are written as usual (``57``); :func:`build_tokenizer`
splits them into single digits and decodes back to exactly the same text. The
verifier also joins digits separated by spaces (``5 7`` reads as ``57``), so text
decoded by a tokenizer that spaces digits out is read correctly too. No
end-of-sequence token is part of the text: add ``tokenizer.eos_token`` when
training (TRL's ``SFTTrainer`` does it; :func:`tokenize_examples` does it for a
plain ``Trainer``). With ``SFTTrainer``, pass either the ``text`` column or the
``prompt`` and ``completion`` columns, not all three: with a ``text`` column
present it appends the end-of-sequence token to ``text`` but trains on
``prompt + completion``, which then never ends.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = [
    "OPERATORS",
    "OOD_KINDS",
    "TEMPLATES",
    "OOD_TEMPLATES",
    "RECOMMENDED_TRAINING",
    "SPECIAL_TOKENS",
    "MAX_LENGTH",
    "DEFAULT_MAX_NEW_TOKENS",
    "ArithmeticConfig",
    "Template",
    "Problem",
    "render",
    "generate_examples",
    "make_dataset",
    "make_splits",
    "ood_config",
    "parse_problem",
    "extract_answer",
    "verify",
    "build_tokenizer",
    "tiny_model_config",
    "build_model",
    "tokenize_examples",
    "generate_completions",
    "evaluate_accuracy",
]

OPERATORS = "+-*"
"""The operators a problem may use, in canonical order."""

OOD_KINDS = ("templates", "ops", "operands", "both")
"""Kinds of out-of-distribution split, see :func:`make_splits` and :func:`ood_config`."""


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    """A prompt phrasing and a solution style.

    ``prompt`` holds ``{expr}`` (the expression), or ``{start}`` with ``{chain}``
    (``add 7, then multiply by 3``) or ``{Chain}`` (``Add 7. Multiply by 3``).
    ``step`` holds ``{eq}`` (``12 + 7 = 19``) and optionally ``{i}`` (the step
    number) or ``{lead}`` (``First`` then ``Then``). ``answer`` holds ``{answer}``.
    """

    prompt: str
    step: str
    answer: str


TEMPLATES: tuple[Template, ...] = (
    Template("What is {expr}?", "{eq}", "The answer is {answer}."),
    Template("Compute {expr}.", "Step {i}: {eq}.", "Answer: {answer}"),
    Template("Start with {start}, {chain}. What number do you get?", "{eq}.", "The result is {answer}."),
    Template("Calculate {expr} step by step.", "{lead}, {eq}.", "So the answer is {answer}."),
    Template("Take {start}. {Chain}. What is the result?", "Step {i}: {eq}", "The answer is {answer}."),
    Template("Evaluate: {expr}", "We get {eq}.", "#### {answer}"),
    Template("Find the value of {expr}.", "{eq}", "Final answer: {answer}"),
    Template("Q: {expr} = ?", "{eq}", "The result is {answer}."),
)
"""The training templates (indices 0 to 7); ``ArithmeticConfig.num_templates`` uses the first ones."""

OOD_TEMPLATES: tuple[Template, ...] = (
    Template("Work out {expr}, please.", "Step {i}: {eq}.", "Answer: {answer}"),
    Template("How much is {expr}?", "{eq}", "The answer is {answer}."),
    Template("Begin with {start}, {chain}. What is the outcome?", "{eq}.", "The result is {answer}."),
    Template("Problem: {expr}", "{lead}, {eq}.", "So the answer is {answer}."),
)
"""Phrasings never used for training (template indices 8 to 11): the out-of-distribution split of kind
``"templates"``. The solution styles are those of the training templates, and :func:`verify` accepts any of them."""

_ALL_TEMPLATES = TEMPLATES + OOD_TEMPLATES

_VERBS = {"+": "add", "-": "subtract", "*": "multiply by"}


# --------------------------------------------------------------------------- configuration


@dataclass
class ArithmeticConfig:
    """Settings of the arithmetic task (all have defaults).

    The defaults (1 to 3 operations on operands 1 to 9, every result between 0 and
    50, all eight templates, 10% noise) are what a 4-layer, 128-wide GPT-2 learns
    from scratch in about two and a half minutes on two CPU cores (see
    :data:`RECOMMENDED_TRAINING`). Every intermediate result stays in
    ``[0, max_result]``: an operation is drawn uniformly from the (operator,
    operand) pairs that keep it there, so products stay small.

    >>> ArithmeticConfig(max_ops=5).max_ops
    5
    >>> ArithmeticConfig(operators="*/")
    Traceback (most recent call last):
    ...
    ValueError: operators='*/' must be a non-empty string of distinct characters from '+-*'
    """

    min_ops: int = field(default=1, metadata={"help": "fewest operations per problem (>= 1)"})
    max_ops: int = field(default=3, metadata={"help": "most operations per problem (>= min_ops)"})
    min_operand: int = field(default=1, metadata={"help": "smallest operand (>= 0)"})
    max_operand: int = field(default=9, metadata={"help": "largest operand (>= min_operand)"})
    max_result: int = field(
        default=50,
        metadata={"help": "largest intermediate or final result (>= max_operand); results are never negative"},
    )
    operators: str = field(default=OPERATORS, metadata={"help": "operators to draw from: a non-empty subset of '+-*'"})
    num_templates: int = field(
        default=len(TEMPLATES), metadata={"help": f"phrasing templates drawn from (1..{len(TEMPLATES)}): diversity"}
    )
    noise: float = field(
        default=0.1,
        metadata={"help": "share of training examples with a wrong step or a wrong final answer (0..1): quality"},
    )
    held_out: float = field(
        default=0.1,
        metadata={
            "help": "share of problems (by a hash of the expression) kept out of training for validation, in [0, 1)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the generator"})

    def __post_init__(self) -> None:
        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be an int >= {low}")

        def fraction(name: str, high_inclusive: bool) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not (0 <= value <= 1 if high_inclusive else 0 <= value < 1):
                raise ValueError(f"{name}={value!r} must be a number in [0, 1{']' if high_inclusive else ')'}")

        integer("min_ops", 1)
        integer("max_ops", self.min_ops)
        integer("min_operand", 0)
        integer("max_operand", self.min_operand)
        integer("max_result", max(self.max_operand, 1))
        integer("num_templates", 1)
        if self.num_templates > len(TEMPLATES):
            raise ValueError(f"num_templates={self.num_templates!r} must be an int in 1..{len(TEMPLATES)}")
        ops = self.operators
        if not isinstance(ops, str) or not ops or set(ops) - set(OPERATORS) or len(set(ops)) != len(ops):
            raise ValueError(f"operators={ops!r} must be a non-empty string of distinct characters from {OPERATORS!r}")
        fraction("noise", True)
        fraction("held_out", False)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an int")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def ood_config(config: ArithmeticConfig, kind: str = "templates", extra_ops: int = 2) -> ArithmeticConfig:
    """The configuration of the out-of-distribution split of ``config`` (clean: ``noise=0``).

    - ``"templates"``: the same problems (ranges, operators, held-out share), phrased
      with the :data:`OOD_TEMPLATES` instead (:func:`make_splits` switches the
      templates; the configuration only drops the noise).
    - ``"ops"``: longer chains, ``max_ops + 1`` to ``max_ops + extra_ops``
      operations; operands and results in the training ranges.
    - ``"operands"``: every operand, the first one included, in the range of the
      same width just above the training one (1..9 gives 10..18); as many
      operations as in training; results still in ``[0, max_result]``.
    - ``"both"``: longer chains of larger operands.

    >>> c = ood_config(ArithmeticConfig(), "ops")
    >>> c.min_ops, c.max_ops, c.min_operand, c.max_operand, c.noise
    (4, 5, 1, 9, 0.0)
    >>> c = ood_config(ArithmeticConfig(), "operands")
    >>> c.min_ops, c.max_ops, c.min_operand, c.max_operand
    (1, 3, 10, 18)
    """
    if kind not in OOD_KINDS:
        raise ValueError(f"kind={kind!r} must be one of {OOD_KINDS}")
    if isinstance(extra_ops, bool) or not isinstance(extra_ops, int) or extra_ops < 1:
        raise ValueError(f"extra_ops={extra_ops!r} must be an int >= 1")
    if kind == "templates":
        return replace(config, noise=0.0)
    changes: dict[str, Any] = {"noise": 0.0, "held_out": 0.0}
    if kind in ("ops", "both"):
        changes.update(min_ops=config.max_ops + 1, max_ops=config.max_ops + extra_ops)
    if kind in ("operands", "both"):
        width = config.max_operand - config.min_operand + 1
        low, high = config.max_operand + 1, config.max_operand + width
        changes.update(min_operand=low, max_operand=high, max_result=max(config.max_result, high))
    return replace(config, **changes)


# --------------------------------------------------------------------------- problems


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


@dataclass(frozen=True)
class Problem:
    """A chain ``start op1 b1 op2 b2 ...`` evaluated from left to right.

    >>> p = Problem(4, (("*", 3), ("-", 2), ("*", 5)))
    >>> p.expression, p.answer, p.num_ops, p.operators
    ('(4 * 3 - 2) * 5', 50, 3, '*-*')
    >>> p.equations
    [(4, '*', 3, 12), (12, '-', 2, 10), (10, '*', 5, 50)]
    """

    start: int
    steps: tuple[tuple[str, int], ...]

    @property
    def num_ops(self) -> int:
        return len(self.steps)

    @property
    def operators(self) -> str:
        """The operators in order, e.g. ``'+*'``."""
        return "".join(op for op, _ in self.steps)

    @property
    def equations(self) -> list[tuple[int, str, int, int]]:
        """The solution steps ``(a, op, b, a op b)``."""
        out, value = [], self.start
        for op, b in self.steps:
            result = _apply(op, value, b)
            out.append((value, op, b, result))
            value = result
        return out

    @property
    def answer(self) -> int:
        value = self.start
        for op, b in self.steps:
            value = _apply(op, value, b)
        return value

    @property
    def expression(self) -> str:
        """The chain as an expression with the fewest parentheses that keep the left-to-right order."""
        expr, top = str(self.start), None
        for op, b in self.steps:
            if op == "*" and top in ("+", "-"):
                expr = f"({expr})"
            expr, top = f"{expr} {op} {b}", op
        return expr


def render(
    problem: Problem,
    template: int = 0,
    *,
    equations: Sequence[tuple[int, str, int, int]] | None = None,
    answer: int | None = None,
) -> tuple[str, str]:
    """``(prompt, completion)`` of ``problem`` in template ``template`` (0 to 7: :data:`TEMPLATES`, 8 to 11:
    :data:`OOD_TEMPLATES`).

    ``equations`` and ``answer`` replace the true solution steps and final answer
    (this is how corrupted examples are written).

    >>> prompt, completion = render(Problem(5, (("-", 2), ("*", 4))), template=2)
    >>> print(prompt + completion)
    Start with 5, subtract 2, then multiply by 4. What number do you get?
    5 - 2 = 3.
    3 * 4 = 12.
    The result is 12.
    """
    if isinstance(template, bool) or not isinstance(template, int) or not 0 <= template < len(_ALL_TEMPLATES):
        raise ValueError(f"template={template!r} must be an int in 0..{len(_ALL_TEMPLATES) - 1}")
    tpl = _ALL_TEMPLATES[template]
    verbs = [f"{_VERBS[op]} {b}" for op, b in problem.steps]
    prompt = tpl.prompt.format(
        expr=problem.expression,
        start=problem.start,
        chain=", ".join(v if k == 0 else f"then {v}" for k, v in enumerate(verbs)),
        Chain=". ".join(v[0].upper() + v[1:] for v in verbs),
    )
    eqs = problem.equations if equations is None else equations
    lines = [
        tpl.step.format(eq=f"{a} {op} {b} = {c}", i=i, lead="First" if i == 1 else "Then")
        for i, (a, op, b, c) in enumerate(eqs, start=1)
    ]
    lines.append(tpl.answer.format(answer=problem.answer if answer is None else answer))
    return prompt + "\n", "\n".join(lines)


def _sample_problem(rng: random.Random, config: ArithmeticConfig, num_ops: int) -> Problem:
    """A chain whose every intermediate result lies in ``[0, max_result]``; restarts when it gets stuck."""
    lo, hi, cap = config.min_operand, config.max_operand, config.max_result
    for _ in range(1000):
        start = value = rng.randint(lo, min(hi, cap))
        steps: list[tuple[str, int]] = []
        for _ in range(num_ops):
            ranges = []  # (op, first operand, last operand) keeping the result in [0, cap]
            for op in config.operators:
                if op == "+":
                    top = min(hi, cap - value)
                elif op == "-":
                    top = min(hi, value)
                else:
                    top = hi if value == 0 else min(hi, cap // value)
                if top >= lo:
                    ranges.append((op, lo, top))
            total = sum(top - low + 1 for _, low, top in ranges)
            if total == 0:
                break
            pick = rng.randrange(total)  # uniform over the feasible (operator, operand) pairs
            for candidate, low, top in ranges:
                if pick <= top - low:
                    op, b = candidate, low + pick
                    break
                pick -= top - low + 1
            steps.append((op, b))
            value = _apply(op, value, b)
        else:
            return Problem(start, tuple(steps))
    raise ValueError(
        f"no {num_ops}-operation problem with operators {config.operators!r}, operands in "
        f"[{lo}, {hi}] and results in [0, {cap}] could be drawn; widen the ranges or add operators"
    )


def _held_out(problem: Problem, share: float) -> bool:
    """Whether the problem belongs to the held-out (validation) share, by a hash of its expression."""
    return zlib.crc32(problem.expression.encode()) / 2**32 < share


def _corrupt(rng: random.Random, problem: Problem) -> tuple[str, list[tuple[int, str, int, int]], int]:
    """A wrong step (the error carries into the later steps) or a wrong final answer."""
    eqs = problem.equations

    def off(value: int) -> int:
        delta = rng.choice((1, 2, 3))
        return value - delta if value - delta >= 0 and rng.random() < 0.5 else value + delta

    if rng.random() < 0.5:
        k = rng.randrange(len(eqs))
        out = list(eqs[:k])
        a, op, b, c = eqs[k]
        value = off(c)
        out.append((a, op, b, value))
        for _, op, b, _ in eqs[k + 1 :]:
            new = _apply(op, value, b)
            out.append((value, op, b, new))
            value = new
        return "step", out, value
    return "answer", eqs, off(problem.answer)


# --------------------------------------------------------------------------- data sets

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
    ['answer', 'completion', 'corrupted', 'corruption', 'expression', 'num_ops', 'operators', 'prompt', 'template',
     'text']
    >>> ex == generate_examples(2, ArithmeticConfig(max_ops=2, noise=0.0), seed=1)
    True
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


# --------------------------------------------------------------------------- verifier

_SPACED_DIGITS = re.compile(r"(?<=\d) +(?=\d)")
_ANSWER = re.compile(r"(?:answer\s+is|answer\s*:|result\s+is|####)\s*(-?\d+)", re.IGNORECASE)
_EQUATION = re.compile(r"(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)")
_START = re.compile(r"\b(?:start\s+with|begin\s+with|take)\s+(\d+)", re.IGNORECASE)
_VERB = re.compile(r"\b(add|subtract|multiply\s+by)\s+(\d+)", re.IGNORECASE)
_EXPR = re.compile(r"[\d(][\d\s()*+-]*[\d)]|\d")
_TOKEN = re.compile(r"\d+|[-+*()]")
_VERB_OPS = {"add": "+", "subtract": "-", "multiply by": "*"}


def _join_digits(text: str) -> str:
    return _SPACED_DIGITS.sub("", text)


def _parse_expression(text: str) -> Problem:
    tokens = _TOKEN.findall(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"the expression {text!r} ends early")
        pos += 1
        return tokens[pos - 1]

    def expr() -> Any:
        node = term()
        while peek() in ("+", "-"):
            op = take()
            node = (op, node, term())
        return node

    def term() -> Any:
        node = factor()
        while peek() == "*":
            take()
            node = ("*", node, factor())
        return node

    def factor() -> Any:
        token = take()
        if token == "(":
            node = expr()
            if take() != ")":
                raise ValueError(f"unbalanced parentheses in {text!r}")
            return node
        if token.isdigit():
            return int(token)
        raise ValueError(f"unexpected {token!r} in {text!r}")

    tree = expr()
    if pos != len(tokens):
        raise ValueError(f"unexpected {tokens[pos]!r} in {text!r}")
    steps: list[tuple[str, int]] = []
    while not isinstance(tree, int):
        op, left, right = tree
        if not isinstance(right, int):
            raise ValueError(f"{text!r} is not a left-to-right chain (an operation's right operand is not a number)")
        steps.append((op, right))
        tree = left
    return Problem(tree, tuple(reversed(steps)))


def parse_problem(prompt: str) -> Problem:
    """The problem of a prompt in any of the :data:`TEMPLATES` or :data:`OOD_TEMPLATES` (digits separated by
    spaces are joined).

    Raises ``ValueError`` when the prompt holds no problem.

    >>> parse_problem("What is (12 + 7) * 3?\\n")
    Problem(start=12, steps=(('+', 7), ('*', 3)))
    >>> parse_problem("Take 5. Subtract 2. Multiply by 4. What is the result?").answer
    12
    >>> parse_problem("Q: 1 2 - 3 = ?").answer
    9
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be str, got {type(prompt).__name__}")
    text = _join_digits(prompt)
    start = _START.search(text)
    if start is not None:
        steps = tuple(
            (_VERB_OPS[" ".join(m.group(1).lower().split())], int(m.group(2)))
            for m in _VERB.finditer(text, start.end())
        )
        if not steps:
            raise ValueError(f"no operation after {start.group(0)!r} in the prompt {prompt[:80]!r}")
        return Problem(int(start.group(1)), steps)
    candidates = [m.group(0) for m in _EXPR.finditer(text)]
    if not candidates:
        raise ValueError(f"no arithmetic problem in the prompt {prompt[:80]!r}")
    return _parse_expression(max(candidates, key=len))


def _answer_match(text: str) -> re.Match | None:
    return _ANSWER.search(text)


def extract_answer(completion: str) -> int | None:
    """The number of the first final-answer line (``The answer is 57.``, ``Answer: 57``, ``The result is 57.``,
    ``#### 57``), or ``None`` when there is none. Digits separated by spaces are joined first.

    >>> extract_answer("12 + 7 = 19\\nThe answer is 19.")
    19
    >>> extract_answer("Step 1: 2 + 2 = 4.\\nAnswer: 4\\nAnswer: 5")
    4
    >>> extract_answer("#### 5 7")
    57
    >>> extract_answer("12 + 7 = 19") is None
    True
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be str, got {type(completion).__name__}")
    match = _answer_match(_join_digits(completion))
    return None if match is None else int(match.group(1))


def verify(prompt: str, completion: str, *, check_steps: bool = True) -> float:
    """1.0 when ``completion`` solves the problem of ``prompt``, else 0.0.

    The completion is read up to its first final-answer line (see
    :func:`extract_answer`; anything after it is ignored). It is correct when that
    answer is the true answer and, with ``check_steps`` (the default), its
    equations ``a op b = c`` before that line are exactly the problem's steps, in
    order, with the right results. A completion without a final answer (empty,
    truncated, garbage) scores 0.0. A prompt that holds no problem raises
    ``ValueError``. Use it as a quality scorer with
    ``qdc_trainer.metrics.VerifierScorer(verify)``.

    >>> prompt = "What is 4 * 3 - 2?\\n"
    >>> verify(prompt, "4 * 3 = 12\\n12 - 2 = 10\\nThe answer is 10.")
    1.0
    >>> verify(prompt, "4 * 3 = 13\\n13 - 2 = 10\\nThe answer is 10.")  # a wrong step
    0.0
    >>> verify(prompt, "The answer is 10.")  # no steps
    0.0
    >>> verify(prompt, "The answer is 10.", check_steps=False)
    1.0
    >>> verify(prompt, "4 * 3 = 12\\n12 - ")  # truncated
    0.0
    """
    problem = parse_problem(prompt)
    if not isinstance(completion, str):
        raise TypeError(f"completion must be str, got {type(completion).__name__}")
    text = _join_digits(completion)
    match = _answer_match(text)
    if match is None or int(match.group(1)) != problem.answer:
        return 0.0
    if check_steps:
        found = [(int(a), op, int(b), int(c)) for a, op, b, c in _EQUATION.findall(text[: match.start()])]
        if found != problem.equations:
            return 0.0
    return 1.0


# --------------------------------------------------------------------------- tokenizer and model

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


# --------------------------------------------------------------------------- training and evaluation


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
    (a single example works too). The sequence is ``<bos> prompt completion
    <eos>``; with ``mask_prompt`` the prompt's labels are ``-100`` so the loss is on
    the completion (and ``<eos>``) only. Pad the batches with a collator that pads
    ``labels`` with ``-100``, e.g. ``DataCollatorForSeq2Seq(tokenizer)``.

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


DEFAULT_MAX_NEW_TOKENS = 120
"""Enough tokens for the longest completion of the default out-of-distribution split."""


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 64,
    progress: bool | None = None,
) -> list[str]:
    """Greedy completions of ``prompts``, decoded up to the first end-of-sequence token.

    Prompts are left-padded in batches of ``batch_size`` (the completions are the
    same as one prompt at a time) by :func:`qdc_trainer.generation.generate`, in eval
    mode under ``torch.no_grad`` on the model's device, and the model's mode is
    restored. ``progress``: a progress bar over the batches (None: when there are two
    or more).

    >>> tok = build_tokenizer()
    >>> completions = generate_completions(
    ...     build_model(tok), tok, ["What is 2 + 3?\\n", "Compute 4 * 2.\\n"], max_new_tokens=4
    ... )
    >>> len(completions), all(isinstance(c, str) for c in completions)
    (2, True)
    """
    from ..generation import generate

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    samples = generate(
        model,
        tokenizer,
        list(prompts),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        eos_token_id=tokenizer.eos_token_id,
        progress=progress,
    )
    return [s.text for s in samples]


def evaluate_accuracy(
    model: Any, tokenizer: Any, examples: Any, *, check_steps: bool = True, **generate_kwargs: Any
) -> float:
    """Share of ``examples`` (a ``Dataset`` or a list of dicts with ``prompt``, or a list of prompts) whose greedy
    completion (:func:`generate_completions`, which takes ``generate_kwargs``) passes :func:`verify`.

    >>> tok = build_tokenizer()
    >>> evaluate_accuracy(build_model(tok), tok, ["What is 2 + 3?\\n"], max_new_tokens=4)  # an untrained model
    0.0
    """
    if hasattr(examples, "column_names"):
        prompts = list(examples["prompt"])
    else:
        prompts = [e if isinstance(e, str) else e["prompt"] for e in examples]
    if not prompts:
        raise ValueError("examples is empty")
    completions = generate_completions(model, tokenizer, prompts, **generate_kwargs)
    return sum(verify(p, c, check_steps=check_steps) for p, c in zip(prompts, completions)) / len(prompts)


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
