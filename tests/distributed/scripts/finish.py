"""How every script the distributed tests launch ends: wait for all ranks, destroy the process group, exit.

Without ``destroy_process_group`` the gloo process group's threads are still running when the interpreter
shuts down, and a rank can abort there with ``terminate called without an active exception`` (SIGABRT)
after all its work is done. Destroying the group first tears those threads down in order. The interpreter's
own teardown is then skipped (``os._exit`` after flushing): every result file is written and closed before
:func:`finish` is called, and nothing else remains to run, while torch's CPU backend has been seen to abort
in that teardown even after a clean ``destroy_process_group``.
"""

from __future__ import annotations

import os
import sys


def finish(code: int = 0) -> None:
    """Barrier, ``destroy_process_group`` (when one exists), flush, and leave with ``code``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
