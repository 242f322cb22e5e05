"""Compatibility: the errors formerly defined here. The checkpoint format is
`kronos_engine.checkpoint_store`, the resume policy `kronos_engine.resume`, the atomic writes
`kronos_engine.run_dir` and the model files `kronos_engine.models.io`. Import the errors from
`kronos_engine.errors`; this module goes once nothing imports it."""

from kronos_engine.errors import CheckpointWriteError, ResumeError

__all__ = ["CheckpointWriteError", "ResumeError"]
