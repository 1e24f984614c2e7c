"""What the backend sends: one request body for an OpenAI-compatible endpoint, and Qwen's stop tokens.

The backend owns this type so that it depends on no pipeline stage;
completion/prompt.py builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# Qwen's end and FIM tokens: any of them in the output means the middle is over.
# The backend client turns them into stop_token_ids where the server can tokenize
# them (vLLM); as strings, vLLM accepts at most 4, so the FIM ones go there
# (the end tokens are already the model's EOS).
# `<|fim_middle|>` is neither: a model that echoes it (or a role header) before the code
# would end its answer before the code arrived. The clean-up strips it at the start, and
# the streaming early stop, which judges the answer after that strip, ends the stream at
# one that follows code.
STOP_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
STOP_STRINGS: tuple[str, ...] = ("<|fim_prefix|>", "<|fim_suffix|>", "<|file_sep|>", "<|repo_name|>")


@dataclass(frozen=True)
class PromptRequest:
    endpoint: Literal["chat", "completions"]
    body: dict[str, Any]


@dataclass(frozen=True)
class Delta:
    """One streamed piece of an answer: its text, each of its tokens with the log
    probability the model gave it (empty where the server sends none), and why the
    answer ended, on the last piece ("stop": an end token, "length": max_tokens;
    None while it goes on, or when the stream was closed before its end)."""

    text: str
    logprobs: tuple[tuple[str, float], ...] = ()
    finish_reason: str | None = None
    index: int = 0  # which of the request's `n` answers it belongs to

