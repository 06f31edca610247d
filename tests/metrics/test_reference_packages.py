"""Agreement with the `diversity` package (stored values; see tests/reference/make_diversity_package_values.py).

The package's n-gram diversity sums unique/total over n = 1..4 on all texts joined
with spaces (n-grams cross text boundaries); its compression ratio gzips twice
through temporary files. Where the definitions match (one document), the values
must be equal; where they differ, the difference must be exactly the documented one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdc_trainer.metrics import compression_ratio, distinct_n

REF = json.loads((Path(__file__).parent / "reference" / "diversity_package_values.json").read_text())


def summed_distinct(texts, max_n=4):
    return sum(distinct_n(texts, n) for n in range(1, max_n + 1))


@pytest.mark.parametrize("i", range(len(REF["single_documents"])))
def test_ngram_diversity_equals_summed_distinct_n_on_one_document(i):
    doc = REF["single_documents"][i]
    assert round(summed_distinct([doc]), 3) == REF["single_document_ngram_diversity_score_4"][i]


@pytest.mark.parametrize("name", list(REF["sets"]))
def test_ngram_diversity_crosses_text_boundaries(name):
    texts = REF["sets"][name]
    # The package's value is ours computed on the texts joined into one document ...
    assert round(summed_distinct([" ".join(texts)]), 3) == REF["ngram_diversity_score_4"][name]
    # ... which counts n-grams spanning two texts ("57. First", "57. The"); ours, per text, does not.
    if name in ("templated", "short"):
        assert round(summed_distinct(texts), 3) != REF["ngram_diversity_score_4"][name]


def test_compression_ratio_orders_the_sets_like_the_package():
    names = list(REF["sets"])
    ours = {n: compression_ratio(REF["sets"][n]) for n in names}
    theirs = REF["compression_ratio"]
    assert sorted(names, key=ours.get) == sorted(names, key=theirs.get)
    # Gzipping the gzip output again (and a file name in the header) only adds bytes: theirs is lower.
    assert all(theirs[n] < ours[n] for n in names)
