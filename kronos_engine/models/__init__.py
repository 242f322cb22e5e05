"""Kronos tokenizer and predictor, compatible with the public checkpoints."""

from .forecast import auto_regressive_inference, sample_from_logits
from .io import CheckpointError
from .predictor import Kronos
from .presets import (
    build_predictor,
    build_tokenizer,
    count_parameters,
    predictor_config,
    tokenizer_config,
)
from .tokenizer import KronosTokenizer

__all__ = [
    "CheckpointError",
    "Kronos",
    "KronosTokenizer",
    "auto_regressive_inference",
    "build_predictor",
    "build_tokenizer",
    "count_parameters",
    "predictor_config",
    "sample_from_logits",
    "tokenizer_config",
]
