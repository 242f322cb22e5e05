"""Config rules the engine relies on: value checks and the predictor's tokenizer precedence."""

from __future__ import annotations

import pytest

from kronos_engine.config import TrainConfig
from kronos_engine.errors import ConfigError


@pytest.mark.parametrize(
    "key,value",
    [
        ("val_samples", 0),
        ("early_stopping_patience", 0),
        ("div_factor", 0),
        ("weight_decay", -0.1),
        ("max_grad_norm", 0),
        ("dropout", 1.0),
        ("batch_size", 0),
        ("sampling", "random"),
        ("split_ratios", [0.5, 0.5, 0.5]),
    ],
)
def test_bad_values_name_their_key(key, value):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        TrainConfig.from_dict({key: value})


def test_predictor_tokenizer_precedence(tmp_path):
    exp = tmp_path / "exp"
    base = {"train_type": "predictor", "exp_dir": str(exp)}
    own = exp / "tokenizer" / "best"
    assert TrainConfig(**base).resolved_tokenizer_path == str(own)
    cfg = TrainConfig(**base, pretrained_tokenizer="NeoQuasar/Kronos-Tokenizer-base")
    assert cfg.resolved_tokenizer_path == "NeoQuasar/Kronos-Tokenizer-base"  # nothing fine-tuned
    own.mkdir(parents=True)
    assert cfg.resolved_tokenizer_path == str(own)  # the fine-tuned one wins once it exists
    explicit = TrainConfig(**base, pretrained_tokenizer="x/y", tokenizer_path="mine")
    assert explicit.resolved_tokenizer_path == "mine"
