"""Errors a run can end with after it started: the CLI reports them as one line, exit code 1.

Plug-ins raise a subclass of `TrainingError`; the core then needs to know nothing about them.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A started run cannot go on (the message names the step and what to change)."""


class NonFiniteError(TrainingError, FloatingPointError):
    """A NaN/inf loss or gradient with `nan_policy=stop`; the last written checkpoint is intact."""
