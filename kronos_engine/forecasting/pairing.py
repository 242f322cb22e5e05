"""A predictor reads the token ids of one tokenizer: forecasting with another gives numbers
that mean nothing, silently. A predictor trained here records its tokenizer's fingerprint in
`best/` (`models/fingerprint.py`); loading it with any other tokenizer is refused."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kronos_engine.errors import ForecastError
from kronos_engine.models.fingerprint import read_tokenizer_record, weights_fingerprint


def check_tokenizer_pairing(
    tokenizer: nn.Module, tokenizer_dir: str | Path, predictor_dir: str | Path
) -> None:
    """Refuse `tokenizer` (read from `tokenizer_dir`) unless it is the one `predictor_dir`
    recorded; predictor folders without a record (public checkpoints, older runs) pass."""
    try:
        record = read_tokenizer_record(Path(predictor_dir))
    except ValueError as exc:
        raise ForecastError(str(exc)) from None
    if record is None:
        return
    found = weights_fingerprint(tokenizer)
    if found != record["sha256"]:
        raise ForecastError(
            f"{tokenizer_dir}: not the tokenizer the predictor {predictor_dir} was trained with "
            f"(fingerprint {found[:12]}, the predictor recorded {record['sha256'][:12]} from "
            f"{record.get('source', '?')}); its token ids would mean something else: use that "
            f"tokenizer (an experiment's predictor run keeps a copy in frozen_tokenizer/)"
        )
