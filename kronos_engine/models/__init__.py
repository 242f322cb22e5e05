"""Kronos tokenizer and predictor, compatible with the public checkpoints."""

from .io import CheckpointError
from .kv_cache import KVCache
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
    "KVCache",
    "Kronos",
    "KronosTokenizer",
    "build_predictor",
    "build_tokenizer",
    "count_parameters",
    "predictor_config",
    "tokenizer_config",
]
