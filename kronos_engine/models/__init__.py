"""Kronos tokenizer and predictor, compatible with the public checkpoints."""

from kronos_engine.errors import CheckpointError
from kronos_engine.models.kv_cache import KVCache
from kronos_engine.models.predictor import Kronos
from kronos_engine.models.presets import (
    build_predictor,
    build_tokenizer,
    count_parameters,
    predictor_config,
    tokenizer_config,
)
from kronos_engine.models.tokenizer import KronosTokenizer

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
