"""Complexity of each text, from qdc_trainer.metrics, as an evaluate measurement."""

import datasets
import evaluate
import numpy as np

from qdc_trainer.metrics import compression_complexity, lengths, reasoning_steps, repetition_rate

_DESCRIPTION = """Per-text complexity: length in words, reasoning steps, compression-based complexity
(compressed / raw bytes) and within-text n-gram repetition, with their means."""

_KWARGS_DESCRIPTION = """
Args:
    data (list of str): the texts.
    repetition_n (int): n-gram order of the repetition rate (default 3).
Returns:
    length, steps, compression, repetition (lists of floats, one per text) and
    mean_length, mean_steps, mean_compression, mean_repetition.
Examples:
    >>> m = evaluate.load(qdc_trainer.metrics.evaluate_module_path("qdc_complexity"))
    >>> m.compute(data=["1 + 1 = 2.", "a b"])["length"]
    [5.0, 2.0]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class QdcComplexity(evaluate.Measurement):
    def _info(self):
        return evaluate.MeasurementInfo(
            module_type="measurement",
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"data": datasets.Value("string")}),
        )

    def _compute(self, data, repetition_n=3):
        values = {
            "length": lengths(data),
            "steps": reasoning_steps(data),
            "compression": compression_complexity(data),
            "repetition": repetition_rate(data, repetition_n),
        }
        out = {name: v.tolist() for name, v in values.items()}
        out.update({f"mean_{name}": float(np.mean(v)) for name, v in values.items()})
        return out
