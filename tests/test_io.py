"""Atomic writes: the file appears whole, with the mode any new file gets under the process umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from qdc_trainer._io import atomic_savez, atomic_write


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_keep_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.json") as f:
            f.write("{}")
        atomic_savez(tmp_path / "s.npz", x=np.arange(3))
        (tmp_path / "plain.txt").write_text("x")  # what open() gives, for comparison
    finally:
        os.umask(old)
    for name in ("a.json", "s.npz", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert os.umask(old) == old  # the umask is left as it was
