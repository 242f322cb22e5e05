"""Errors a run can end with after it started: the CLI reports them as one line, exit code 1.

Plug-ins raise a subclass of `TrainingError`; the core then needs to know nothing about them.
`ResumeError` (a checkpoint that cannot be resumed: a user error, exit code 2) and
`CheckpointWriteError` (an `OSError`) live here too, so that the run folder, the checkpoint
store and the resume policy share them without importing each other.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A started run cannot go on (the message names the step and what to change)."""


class NonFiniteError(TrainingError, FloatingPointError):
    """A NaN/inf loss or gradient with `nan_policy=stop`; the last written checkpoint is intact."""


class ResumeError(RuntimeError):
    """A checkpoint cannot be used for resuming; the message names the folder and the problem."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, read-only); the earlier ones are
    intact. The message names the folder and the underlying error in one line."""
