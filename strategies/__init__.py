"""Built-in loss strategies, registered by name in `kronos_engine.registry.STRATEGIES`."""

from kronos_engine.strategies.predictor_next_token import PredictorNextTokenStrategy
from kronos_engine.strategies.tokenizer_recon import TokenizerReconStrategy

__all__ = ["TokenizerReconStrategy", "PredictorNextTokenStrategy"]
