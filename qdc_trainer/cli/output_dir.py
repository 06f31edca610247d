"""The output folder of a ``qdc train`` run: which folders it may use, its marker, and its lock.

Rules (:class:`RunFolder` applies them, in this order):

1. **Safe folders only.** The filesystem root, the folders right under it (``/tmp``, ``/home``, ...), the home
   folder and the folders above it, the current folder and the folders above it, and a path that is a file are
   refused (:class:`OutputDirError`, which the command line reports with exit code 2).
2. **One run per folder.** The main process takes a lock (:data:`LOCK_FILE`, holding its process id, host and
   start time) before it writes anything; a second run into the folder is refused with the holder named. The lock
   is removed when the run ends, cleanly or by an exception; a lock left by a killed run is recognised as stale
   (same host, and its process is gone) and taken over.
3. **Never delete what qdc did not write.** A fresh run needs a new or empty folder, or one that holds the marker
   (:data:`MARKER_FILE`, written by a ``qdc train`` run when it takes the folder; ``qdc_run.json`` of earlier
   versions counts too). Only then, and only once the new run is known to start (model, data and trainer built),
   are the files an earlier run wrote that would be read as the new run's removed: ``trainer_state.json``,
   ``results.json``, the monitor's samples and the report's pages and figures. Nothing else is ever deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ..report.logs import RUN_CONFIG_FILE as RUN_FILE  # the run description, which the report reads

__all__ = ["LOCK_FILE", "MARKER_FILE", "RESULTS_FILE", "RUN_FILE", "OutputDirError", "RunFolder", "check_output_dir"]

logger = logging.getLogger(__name__)

MARKER_FILE = "qdc_output.json"
"""Written into the output folder by the ``qdc train`` run that takes it: the folder is qdc's to manage."""
LOCK_FILE = "qdc.lock"
"""Held by the running ``qdc train`` in its output folder (JSON: ``pid``, ``hostname``, ``started``)."""
RESULTS_FILE = "results.json"
"""The run's final results."""


class OutputDirError(ValueError):
    """An output folder that a run may not use (unsafe, taken by another run, or holding files qdc did not write)."""


def check_output_dir(out: str | os.PathLike) -> None:
    """Refuse (:class:`OutputDirError`) an output folder that is a file, or one a run must never write into.

    >>> check_output_dir("/")
    Traceback (most recent call last):
        ...
    qdc_trainer.cli.output_dir.OutputDirError: output_dir '/' is the filesystem root; ...
    """
    raw = os.fspath(out)
    if not raw.strip():
        raise OutputDirError("output_dir is empty: name a folder of its own for the run (e.g. runs/my_run)")
    where = Path(os.path.expanduser(raw)).resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    protected = [
        (where == Path(where.anchor), "the filesystem root"),
        (where.parent == Path(where.anchor), "a folder right under the filesystem root"),
        (os.path.expanduser(raw).startswith("~"), "a path starting with '~' that names no home folder"),
        (home == where or where in home.parents, "the home folder or a folder above it"),
        (cwd == where or where in cwd.parents, "the current folder or a folder above it"),
    ]
    for hit, what in protected:
        if hit:
            raise OutputDirError(
                f"output_dir {raw!r} is {what}; qdc train writes and replaces files in its output_dir, so it "
                "needs a folder of its own (e.g. --output_dir runs/my_run)"
            )
    if where.exists() and not where.is_dir():
        raise OutputDirError(f"output_dir {raw} is a file, not a folder: choose another output_dir")


def _is_marked(out: Path) -> bool:
    """Whether ``out`` was written by ``qdc train``: it holds the marker, or a run description of an earlier
    version (``qdc_run.json``, a JSON object with ``training`` and ``qdc``)."""
    if (out / MARKER_FILE).is_file():
        return True
    try:
        described = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(described, dict) and "training" in described and "qdc" in described


def _stale_outputs() -> list[str]:
    """What an earlier run left that a new run would be read by: its log, results, samples and report."""
    from ..report import FIGURES, RUN_PAGE, SAMPLES_FILE, STATE_FILE

    pages = (f"{RUN_PAGE}.html", f"{RUN_PAGE}.md", *(f[0] for f in FIGURES))
    return [STATE_FILE, RESULTS_FILE, SAMPLES_FILE, *(os.path.join("report", name) for name in pages)]


# --------------------------------------------------------------------------- the lock


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None where unknown: with the
    process id it tells a live holder from a new process that reuses its id."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_alive(holder: dict[str, Any]) -> bool | None:
    """True or False for a lock taken on this host; None for another host's (its processes cannot be seen)."""
    if holder.get("hostname") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    started = holder.get("pid_start")
    return started is None or _process_start(pid) in (None, started)


def _describe_holder(holder: dict[str, Any]) -> str:
    when = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when)) if isinstance(when, (int, float)) else "?"
    return f"process {holder.get('pid', '?')} on host {holder.get('hostname', '?')}, started {when}"


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _create_exclusive(path: Path, content: str) -> None:
    """Create ``path`` with ``content`` complete, or raise ``FileExistsError``: the text is written to a temporary
    file first and linked to ``path`` (a link never replaces an existing file), so a reader never sees a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: create exclusively, then write
            fd2 = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            with os.fdopen(fd2, "w", encoding="utf-8") as f:
                f.write(content)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def acquire_lock(out: Path) -> dict[str, Any]:
    """Take the lock of ``out`` (created if missing) for this process; returns what it holds.

    Raises :class:`OutputDirError` naming the holder when a live run holds it (or a run on another host, whose
    process cannot be checked). A lock whose process is gone (a run that was killed) is taken over with a warning.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    mine = {"pid": os.getpid(), "hostname": socket.gethostname(), "started": time.time()}
    start = _process_start(os.getpid())
    if start is not None:
        mine["pid_start"] = start
    for _ in range(3):
        try:
            _create_exclusive(path, json.dumps(mine))
            return mine
        except FileExistsError:
            pass
        try:
            holder = _read_lock(path)
        except FileNotFoundError:
            continue  # released meanwhile: try again
        alive = None if holder is None else _holder_alive(holder)
        if holder is not None and alive is not False:
            where = "" if alive else " (on another host: its process cannot be checked from here)"
            raise OutputDirError(
                f"output_dir {out} is in use by another qdc train run: {_describe_holder(holder)}{where}. Two runs "
                "in one folder would mix their checkpoints and results: wait for that run to end, or choose another "
                f"output_dir. If no such run is going on, delete {path}"
            )
        logger.warning(
            "output_dir %s: taking over the lock of a run that is no longer running (%s)",
            out,
            "an unreadable lock file" if holder is None else _describe_holder(holder),
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    raise OutputDirError(f"output_dir {out}: could not take its lock {path}; another run keeps taking it")


def release_lock(out: Path, mine: dict[str, Any]) -> None:
    """Remove the lock of ``out`` if this process holds it (never another run's)."""
    path = out / LOCK_FILE
    try:
        holder = _read_lock(path)
    except FileNotFoundError:
        return
    if holder is not None and holder.get("pid") == mine["pid"] and holder.get("started") == mine["started"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --------------------------------------------------------------------------- the folder of one run


class RunFolder:
    """The output folder of one ``qdc train`` run, used as ``with RunFolder(out, fresh) as folder: ...``.

    Entering checks the folder and, on the main process, takes the lock, checks that a fresh run may use the
    folder and writes the marker (the other processes stop with the main one when it refuses); :meth:`started`
    (call it once the model, the data and the trainer are built) removes what an earlier run left that would be
    read as this run's, on a fresh run; leaving releases the lock, whatever ended the run.

    Args:
        out: the output folder.
        fresh: a run that starts afresh (no ``resume_from_checkpoint``).
        main: whether this is the main process (the one that writes the folder's own files).
    """

    def __init__(self, out: str | os.PathLike, *, fresh: bool, main: bool = True) -> None:
        self.out = Path(os.path.expanduser(os.fspath(out)))
        self.fresh = fresh
        self.main = main
        self._lock: dict[str, Any] | None = None

    def __enter__(self) -> RunFolder:
        check_output_dir(self.out)
        if self.main:
            self._lock = acquire_lock(self.out)
        try:
            if self.fresh and self.main:  # one process checks (the others would see its marker half written)
                self._check_fresh()
            if self.main and not (self.out / MARKER_FILE).is_file():
                with atomic_write(self.out / MARKER_FILE) as f:
                    json.dump({"written_by": "qdc train", "note": "this folder holds qdc train runs"}, f, indent=2)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None:
            release_lock(self.out, self._lock)
            self._lock = None

    def _check_fresh(self) -> None:
        """A fresh run needs a folder with no checkpoints, and one that is new, empty or qdc's own."""
        import re

        if not self.out.is_dir():
            return
        names = [p.name for p in self.out.iterdir() if p.name != LOCK_FILE and not p.name.startswith(f".{LOCK_FILE}.")]
        checkpoints = sorted(
            (n for n in names if re.fullmatch(r"checkpoint-\d+", n) and (self.out / n).is_dir()),
            key=lambda n: int(n.split("-")[1]),
        )
        if checkpoints:
            shown = ", ".join(checkpoints[:3]) + (f" and {len(checkpoints) - 3} more" if len(checkpoints) > 3 else "")
            raise OutputDirError(
                f"output_dir {self.out} holds checkpoints of an earlier run ({shown}). To continue that run, set "
                "resume_from_checkpoint: true (flag --resume_from_checkpoint true); to start afresh, choose "
                "another output_dir or delete those checkpoint folders"
            )
        if names and not _is_marked(self.out):
            shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise OutputDirError(
                f"output_dir {self.out} is not empty ({shown}) and was not written by qdc train (it has no "
                f"{MARKER_FILE}); a run would overwrite files there, so it is refused. Choose a new or empty "
                "output_dir"
            )

    def started(self) -> list[str]:
        """The run is known to start: on a fresh run, the main process removes the files of :func:`_stale_outputs`
        an earlier qdc run left (the folder holds the marker, checked on entering). Returns what it removed."""
        if not (self.fresh and self.main) or not self.out.is_dir():
            return []
        removed = [name for name in _stale_outputs() if (self.out / name).is_file()]
        for name in removed:
            (self.out / name).unlink()
        if removed:
            logger.warning(
                "output_dir %s held an earlier run; this fresh run replaces it (removed %s)",
                self.out,
                ", ".join(removed),
            )
        return removed
