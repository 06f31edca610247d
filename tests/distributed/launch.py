"""Shared helpers of the distributed tests: start CPU ranks with ``accelerate launch`` (gloo) and wait for them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPTS = Path(__file__).resolve().parent / "scripts"
LAUNCH_TIMEOUT = 420  # seconds; a hang (e.g. a rank waiting in a collective) fails instead of blocking


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "ACCELERATE_USE_CPU": "true",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
    )
    env.pop("ACCELERATE_CONFIG_FILE", None)
    return env


def run(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` in its own session; on a timeout kill that session (the launcher and its ranks)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=launch_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=LAUNCH_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{' '.join(cmd[-3:])} hung: no exit after {LAUNCH_TIMEOUT}s\n{log.read_text()[-4000:]}")
    assert rc == 0, f"{' '.join(cmd)} exited with {rc}\n{log.read_text()[-6000:]}"


def accelerate_launch(num_processes: int, *target: str, options: tuple[str, ...] = ("--multi_gpu",)) -> list[str]:
    """The ``accelerate launch`` command that starts ``num_processes`` CPU ranks running ``target``.

    `accelerate launch --cpu --num_processes 2` on one machine starts ONE process (its simple launcher;
    multi-CPU needs mpirun). `--multi_gpu` goes through torchrun and starts 2 ranks; with
    `use_cpu=True` / ACCELERATE_USE_CPU each rank sets up MULTI_CPU with the gloo backend. ``options``
    replace ``--multi_gpu`` (``--use_fsdp ...`` also starts the ranks through torchrun).
    """
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *options,
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *target,
    ]
