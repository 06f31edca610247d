"""One decision on every process: the highest value over all ranks.

``control.should_training_stop`` is not synced across ranks: a rank that stops alone hangs the job. A
callback that decides from what its own rank saw (a logged series, a rollout) therefore takes the maximum
over processes first, the same on every rank, and then acts on it (Lightning's early stopping does the
same with ``strategy.reduce_boolean_decision``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["agree_max"]


def agree_max(value: int, accelerator: Any = None, device: Any = None) -> int:
    """The highest ``value`` (an int) over all processes; every process must call it at the same point.

    With an ``accelerator`` (the bound trainer's ``trainer.accelerator``) the values are collected with its
    ``gather``, on the accelerator's device, as the Trainer's own collective calls are, and the maximum taken.
    (Not ``reduce(..., reduction="max")``: accelerate 1.15 supports it, but earlier versions, which the
    ``accelerate>=1.0`` requirement admits, silently sum instead, and two warnings would add up to a collapse.)
    Without one (a callback used without its trainer), an initialised ``torch.distributed`` group of
    more than one process is used directly, with a tensor on ``device`` (the CPU for a gloo group or
    when no device is given). On a single process the value comes back unchanged.

    >>> agree_max(2)
    2
    >>> from types import SimpleNamespace
    >>> agree_max(1, SimpleNamespace(num_processes=1))  # one process: nothing to agree on
    1
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"agree_max takes an int, got {value!r}")
    import torch

    if accelerator is not None:
        if getattr(accelerator, "num_processes", 1) <= 1:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=accelerator.device)
        return int(accelerator.gather(t).max().item())
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if device is None or dist.get_backend() == "gloo":
            device = torch.device("cpu")
        t = torch.tensor([int(value)], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())
    return int(value)
