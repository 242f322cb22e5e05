"""Built-in loss strategies, registered by name in `kronos_engine.registry.STRATEGIES`."""

from strategies.predictor_next_token import PredictorNextTokenStrategy
from strategies.tokenizer_recon import TokenizerReconStrategy

__all__ = ["TokenizerReconStrategy", "PredictorNextTokenStrategy"]
