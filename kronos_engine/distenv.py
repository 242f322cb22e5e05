"""Where this process stands in a distributed job, read from the launcher's environment
(torchrun, `--nprocs`, torch's elastic agent), usable before any process group exists.

The one home of `RANK`/`LOCAL_RANK`/`WORLD_SIZE`: logging (only rank 0 prints), the run folder
(only rank 0 writes), the launcher (a worker is not re-launched) and the DDP executor all ask here.
"""

from __future__ import annotations

import os


def rank() -> int:
    """The global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """The rank on this machine (0 without a launcher): picks the GPU and the machine's builder."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_rank0() -> bool:
    """Rank 0 (or no launcher): the process that logs and reports."""
    return rank() == 0


def is_writer() -> bool:
    """Rank 0 (or no torchrun): the process that writes the run's files."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """A worker of a multi-process job (torchrun, `--nprocs`): DDP must join its group."""
    return world_size() > 1 and "RANK" in os.environ


def under_launcher() -> bool:
    """Started by torchrun or torch's elastic agent (even with one process): `--nprocs` would
    start workers inside a worker."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "RANK" in os.environ
