"""Diversity of a collection of texts, from qdc_trainer.metrics, as an evaluate measurement."""

import datasets
import evaluate

from qdc_trainer.metrics import compression_ratio, distinct_n, duplicate_rate, ead, ngram_entropy, self_bleu

_DESCRIPTION = """Lexical diversity of a list of texts: distinct-n and EAD (n = 1..max_n), n-gram entropy,
leave-one-out self-BLEU, gzip compression ratio and duplicate rate. Texts are split on whitespace."""

_KWARGS_DESCRIPTION = """
Args:
    data (list of str): the texts.
    max_n (int): highest n-gram order for distinct-n, EAD and self-BLEU (default 4).
    vocab_size (int, optional): vocabulary size for EAD; EAD is reported only when it is given.
Returns:
    distinct_1..distinct_{max_n}, ead_1..ead_{max_n} (with vocab_size), ngram_entropy_1, self_bleu,
    compression_ratio, duplicate_rate (floats). self_bleu is omitted for fewer than two texts,
    compression_ratio when all texts are empty.
Examples:
    >>> m = evaluate.load(qdc_trainer.metrics.evaluate_module_path("qdc_diversity"))
    >>> m.compute(data=["the cat sat", "the cat ran"])["distinct_1"]
    0.6666666666666666
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class QdcDiversity(evaluate.Measurement):
    def _info(self):
        return evaluate.MeasurementInfo(
            module_type="measurement",
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"data": datasets.Value("string")}),
        )

    def _compute(self, data, max_n=4, vocab_size=None):
        out = {}
        for n in range(1, max_n + 1):
            out[f"distinct_{n}"] = distinct_n(data, n)
            if vocab_size is not None:
                out[f"ead_{n}"] = ead(data, n, vocab_size=vocab_size)
        out["ngram_entropy_1"] = ngram_entropy(data, 1)
        out["duplicate_rate"] = duplicate_rate(data)
        if len(data) >= 2:
            out["self_bleu"] = self_bleu(data, max_n=max_n)
        if any(t.strip() for t in data):
            out["compression_ratio"] = compression_ratio(data)
        return out
