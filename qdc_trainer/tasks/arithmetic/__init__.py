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

Modules: :mod:`.problems` (operators, templates, :class:`ArithmeticConfig`, :class:`Problem`, :func:`render`),
:mod:`.splits` (:func:`generate_examples`, :func:`make_dataset`, :func:`make_splits`), :mod:`.verifier`
(:func:`parse_problem`, :func:`extract_answer`, :func:`verify`), :mod:`.model` (tokenizer, tiny GPT-2,
:data:`RECOMMENDED_TRAINING`) and :mod:`.evaluation` (:func:`generate_completions`, :func:`evaluate_accuracy`).
:func:`tokenize_examples` is the task-independent one of :mod:`qdc_trainer.tasks.text`, re-exported here.
Every name is importable from ``qdc_trainer.tasks.arithmetic``.
"""

from ..text import tokenize_examples
from .evaluation import DEFAULT_MAX_NEW_TOKENS, evaluate_accuracy, evaluate_pass_at_k, generate_completions
from .model import MAX_LENGTH, RECOMMENDED_TRAINING, SPECIAL_TOKENS, build_model, build_tokenizer, tiny_model_config
from .problems import (
    OOD_KINDS,
    OOD_TEMPLATES,
    OPERATORS,
    TEMPLATES,
    ArithmeticConfig,
    Problem,
    Template,
    ood_config,
    render,
)
from .splits import generate_examples, make_dataset, make_splits
from .verifier import extract_answer, parse_problem, verify

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
    "evaluate_pass_at_k",
]
