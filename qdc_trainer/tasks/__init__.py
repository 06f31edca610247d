"""Built-in synthetic tasks: small, verifiable data sets whose quality, diversity and complexity are set by a config.

:mod:`qdc_trainer.tasks.arithmetic` holds step-by-step arithmetic problems with a
verifier, in-distribution and out-of-distribution splits, a tiny tokenizer and a
tiny GPT-2 configuration that learns the task on a CPU in a few minutes.
:mod:`qdc_trainer.tasks.text` tokenizes the prompt and completion pairs of any task.

>>> from qdc_trainer.tasks import ArithmeticConfig, generate_examples, verify
>>> ex = generate_examples(1, ArithmeticConfig(noise=0.0), seed=0)[0]
>>> verify(ex["prompt"], ex["completion"])
1.0
"""

from . import arithmetic as arithmetic  # the submodule, re-exported
from .arithmetic import (
    DEFAULT_MAX_NEW_TOKENS,
    MAX_LENGTH,
    OOD_KINDS,
    OOD_TEMPLATES,
    OPERATORS,
    RECOMMENDED_TRAINING,
    SPECIAL_TOKENS,
    TEMPLATES,
    ArithmeticConfig,
    Problem,
    Template,
    build_model,
    build_tokenizer,
    evaluate_accuracy,
    evaluate_pass_at_k,
    extract_answer,
    generate_completions,
    generate_examples,
    make_dataset,
    make_splits,
    ood_config,
    parse_problem,
    render,
    tiny_model_config,
    tokenize_examples,
    verify,
)

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "MAX_LENGTH",
    "OOD_KINDS",
    "OOD_TEMPLATES",
    "OPERATORS",
    "RECOMMENDED_TRAINING",
    "SPECIAL_TOKENS",
    "TEMPLATES",
    "ArithmeticConfig",
    "build_model",
    "build_tokenizer",
    "evaluate_accuracy",
    "evaluate_pass_at_k",
    "extract_answer",
    "generate_completions",
    "generate_examples",
    "make_dataset",
    "make_splits",
    "ood_config",
    "parse_problem",
    "Problem",
    "render",
    "Template",
    "tiny_model_config",
    "tokenize_examples",
    "verify",
]
