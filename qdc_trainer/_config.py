"""One way to pass a component's options: its config dataclass, as TRL's trainers take a ``GRPOConfig``.

``QDCSampler(n, quality=q, config=QDCSamplerConfig(tradeoff=0.3))`` and
``GenerationMonitorCallback(prompts, GenerationMonitorConfig(num_samples=4))`` are the spelling to use.
Earlier releases also took each option as a keyword argument (``QDCSampler(n, tradeoff=0.3)``);
:func:`resolve_config` still accepts that for one release, with a ``FutureWarning`` that names the
config spelling.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, TypeVar

__all__ = ["resolve_config"]

C = TypeVar("C")


def resolve_config(
    config_class: type[C], config: C | None, overrides: dict[str, Any], *, owner: str, stacklevel: int = 3
) -> C:
    """A new ``config_class`` instance: ``config`` (the defaults when None) with ``overrides`` applied.

    ``overrides`` are the deprecated keyword spelling of the config's fields: a name that is not a field
    raises ``TypeError``; the others are applied (and validated by the config) with one ``FutureWarning``
    that names the spelling to use instead. ``owner`` is the callable the user called, for the messages;
    ``stacklevel`` points the warning at the user's line (3: the caller of the function that calls this).
    The result is always a new object, so changing ``config`` afterwards changes nothing.

    >>> from qdc_trainer.data.weights import QDCSamplerConfig
    >>> resolve_config(QDCSamplerConfig, QDCSamplerConfig(tradeoff=0.3), {}, owner="QDCSampler").tradeoff
    0.3
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     cfg = resolve_config(QDCSamplerConfig, None, {"tradeoff": 0.3}, owner="QDCSampler")
    >>> cfg.tradeoff, caught[0].category.__name__
    (0.3, 'FutureWarning')
    >>> print(caught[0].message)
    QDCSampler(tradeoff=0.3): options as keyword arguments are deprecated ...; pass config=QDCSamplerConfig(...)
    """
    if config is not None and not isinstance(config, config_class):
        raise TypeError(f"config must be a {config_class.__name__}, got {type(config).__name__}")
    names = {f.name for f in dataclasses.fields(config_class) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown {owner} option(s) {unknown}; see {config_class.__name__}")
    if overrides:
        given = ", ".join(f"{name}={value!r}" for name, value in overrides.items())
        instead = (
            f"config=dataclasses.replace(config, {given})"
            if config is not None
            else f"config={config_class.__name__}({given})"
        )
        warnings.warn(
            f"{owner}({given}): options as keyword arguments are deprecated and will be removed in the next "
            f"release; pass {instead}",
            FutureWarning,
            stacklevel=stacklevel,
        )
    return dataclasses.replace(config if config is not None else config_class(), **overrides)
