"""Regenerate diversity_package_values.json: values of the `diversity` package (PyPI, 0.3.1) on fixed inputs.

The package pins transformers < 5, so it cannot live in this project's environment.
This script installs it without dependencies into a temporary folder and loads only
its two self-contained modules (compression.py and ngram_diversity.py, which need
nltk alone), then stores their outputs for tests/test_reference_packages.py.

    python tests/metrics/reference/make_diversity_package_values.py
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent.parent))

from qdc_trainer.demo import EXAMPLES  # noqa: E402

VERSION = "0.3.1"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", tmp, f"diversity=={VERSION}"],
            check=True,
        )
        compression = load(Path(tmp) / "diversity" / "compression.py", "diversity_compression")
        ngram = load(Path(tmp) / "diversity" / "ngram_diversity.py", "diversity_ngram")
        single_docs = [texts[0] for texts in EXAMPLES.values()]
        values = {
            "package": f"diversity=={VERSION}",
            "sets": EXAMPLES,
            "compression_ratio": {
                name: compression.compression_ratio(texts, "gzip") for name, texts in EXAMPLES.items()
            },
            "ngram_diversity_score_4": {
                name: ngram.ngram_diversity_score(texts, 4) for name, texts in EXAMPLES.items()
            },
            "single_documents": single_docs,
            "single_document_ngram_diversity_score_4": [ngram.ngram_diversity_score([d], 4) for d in single_docs],
        }
    out = HERE / "diversity_package_values.json"
    out.write_text(json.dumps(values, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
