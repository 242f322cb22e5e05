"""Build the trained model and the frozen tokenizer from a `TrainConfig`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kronos_engine.config import ConfigError, TrainConfig


def build_tokenizer_model(cfg: TrainConfig) -> nn.Module:
    from kronos_engine.models import KronosTokenizer, build_tokenizer

    if cfg.pretrained_tokenizer:
        return KronosTokenizer.from_pretrained(cfg.pretrained_tokenizer)
    return build_tokenizer(cfg.model_preset)


def build_predictor_model(cfg: TrainConfig) -> nn.Module:
    from kronos_engine.models import Kronos, build_predictor

    if cfg.pretrained_predictor:
        return Kronos.from_pretrained(cfg.pretrained_predictor)
    return build_predictor(cfg.model_preset)


def load_frozen_tokenizer(cfg: TrainConfig) -> nn.Module:
    """The tokenizer a predictor run encodes with; eval mode, no gradients."""
    from kronos_engine.models import KronosTokenizer

    path = cfg.resolved_tokenizer_path
    looks_local = path is not None and (Path(path).exists() or path.startswith((".", "/")))
    if path is None or (looks_local and not Path(path).exists()):
        key = "tokenizer_path" if cfg.tokenizer_path else "pretrained_tokenizer"
        if not cfg.tokenizer_path and not cfg.pretrained_tokenizer:
            key = "tokenizer_path"
        raise ConfigError(
            f"{key}: no tokenizer at '{path}'; a predictor needs a trained tokenizer: run "
            f"--train_type=tokenizer with the same exp_dir first, or set tokenizer_path / "
            f"pretrained_tokenizer to a tokenizer directory"
        )
    tokenizer = KronosTokenizer.from_pretrained(path)
    tokenizer.eval()
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    return tokenizer


def check_bits_match(tokenizer: nn.Module, predictor: nn.Module, cfg: TrainConfig) -> None:
    """A predictor can only read the ids of a tokenizer with the same s1/s2 bit split."""
    tok_bits = (tokenizer.s1_bits, tokenizer.s2_bits)
    pred_bits = (predictor.s1_bits, predictor.s2_bits)
    if tok_bits != pred_bits:
        key = "pretrained_predictor" if cfg.pretrained_predictor else "model_preset"
        raise ConfigError(
            f"{key}: predictor s1_bits/s2_bits {pred_bits} differ from the tokenizer's "
            f"{tok_bits} ({cfg.resolved_tokenizer_path}); use a predictor with the "
            f"tokenizer's bits"
        )


def _read_local_config(path: str, key: str) -> dict | None:
    """`config.json` of a local model directory, None for a hub id (not checked offline)."""
    import json

    directory = Path(path)
    if not directory.exists():
        return None
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{key}: '{path}' has no config.json (not a model directory)")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {config_file} is not valid JSON ({exc})") from None


def preflight(cfg: TrainConfig) -> None:
    """Cheap checks that need files but no data or weights: fail before any real work."""
    if cfg.train_type != "predictor":
        return
    from kronos_engine.models import predictor_config

    tok_key = (
        "tokenizer_path"
        if cfg.tokenizer_path or not cfg.pretrained_tokenizer
        else "pretrained_tokenizer"
    )
    tok_path = cfg.resolved_tokenizer_path
    if tok_path is None or (
        not Path(tok_path).exists() and tok_path.startswith((".", "/", "outputs"))
    ):
        load_frozen_tokenizer(cfg)  # raises the explanatory ConfigError
    tok_cfg = _read_local_config(tok_path, tok_key)
    if cfg.pretrained_predictor:
        pred_cfg = _read_local_config(cfg.pretrained_predictor, "pretrained_predictor")
    else:
        pred_cfg = predictor_config(cfg.model_preset)
    if tok_cfg is None or pred_cfg is None:
        return
    tok_bits = (tok_cfg.get("s1_bits"), tok_cfg.get("s2_bits"))
    pred_bits = (pred_cfg.get("s1_bits"), pred_cfg.get("s2_bits"))
    if tok_bits != pred_bits:
        key = "pretrained_predictor" if cfg.pretrained_predictor else "model_preset"
        raise ConfigError(
            f"{key}: predictor s1_bits/s2_bits {pred_bits} differ from the tokenizer's "
            f"{tok_bits} at '{tok_path}'; use a predictor with the tokenizer's bits"
        )
