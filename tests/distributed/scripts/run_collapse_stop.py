"""Two ranks see different values of a watched series; only rank 0's collapse.

Run under ``accelerate launch`` with 2 processes; writes ``<out>/rank<R>.json`` with the
step each rank stopped at. Used by tests/distributed/test_multiprocess_collapse.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from finish import finish

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from helpers import LogSeries, build_tokenizer, tiny_trainer  # noqa: E402

from qdc_trainer.callbacks.collapse import CollapseDetectorCallback, SeriesDetector  # noqa: E402

KEY = "qdc/gen/per_input/distinct_2"
HEALTHY = [0.8] * 12
COLLAPSING = [0.8, 0.8, 0.8, 0.7, 0.5, 0.3] + [0.1] * 6  # collapse at step 5 (-37.5%)


def main() -> None:
    out = Path(sys.argv[1])
    tokenizer = build_tokenizer()
    trainer = tiny_trainer(out / "run", tokenizer, 12, num_examples=96)
    rank = trainer.args.process_index
    detector = CollapseDetectorCallback(
        trainer, watch=[SeriesDetector(KEY, ema=1.0, warmup=3)], actions=("log", "stop")
    )
    # a per-rank value: the kind of data only one rank saw
    trainer.add_callback(LogSeries(trainer, KEY, COLLAPSING if rank == 0 else HEALTHY))
    trainer.add_callback(detector)
    trainer.train()
    result = {
        "rank": rank,
        "world": trainer.args.world_size,
        "global_step": trainer.state.global_step,
        "stopped_at": detector.stopped_at,
        "own_level": detector.detectors[KEY].signal.level,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
    finish()
