"""Arithmetic problems: operators, :data:`TEMPLATES` (a prompt phrasing with a solution style), the
generator's :class:`ArithmeticConfig` (its quality, diversity and complexity controls), :class:`Problem` and
:func:`render`."""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

OPERATORS = "+-*"
"""The operators a problem may use, in canonical order."""

OOD_KINDS = ("templates", "ops", "operands", "both")
"""Kinds of out-of-distribution split, see :func:`make_splits` and :func:`ood_config`."""


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
            for op, low, top in ranges:  # noqa: B007 (op is the one picked, used after the break)
                if pick <= top - low:
                    b = low + pick
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
