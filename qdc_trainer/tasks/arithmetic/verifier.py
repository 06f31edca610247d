"""The arithmetic verifier: :func:`parse_problem` reads the problem a prompt states, :func:`extract_answer` the
final answer of a completion, and :func:`verify` checks every step and the answer."""

from __future__ import annotations

import re
from typing import Any

from .problems import Problem

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
