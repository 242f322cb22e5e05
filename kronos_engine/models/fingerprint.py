"""Which weights a model holds, as one sha256: what pairs a predictor with the exact tokenizer
it learned to read, and a LoRA adapter with the frozen base it was trained on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Beside a predictor's best/ model: the tokenizer it was trained with (not a public file).
TOKENIZER_RECORD = "tokenizer_fingerprint.json"


def weights_fingerprint(model: nn.Module, skip: str | None = None) -> str:
    """sha256 over the state dict's names and raw bytes, in state-dict order; names holding
    `skip` are left out. Equal for a model and its `save_pretrained` / `from_pretrained` copy."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if skip is not None and skip in name:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def write_tokenizer_record(folder: Path, sha256: str, source: str) -> None:
    """Record in a saved predictor folder the tokenizer it reads (fingerprint and origin)."""
    record = {"sha256": sha256, "source": source}
    (Path(folder) / TOKENIZER_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")


def read_tokenizer_record(folder: Path) -> dict[str, Any] | None:
    """The record `write_tokenizer_record` left, or None (public or older predictor folders);
    an unreadable record is a ValueError naming the file."""
    file = Path(folder) / TOKENIZER_RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: unreadable ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise ValueError(f"{file}: expected an object with a 'sha256' string")
    return record
