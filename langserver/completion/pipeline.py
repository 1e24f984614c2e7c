"""The pipeline's public entry point: context -> prompt -> backend -> postprocess.

The server and the benchmarks call `complete`; it knows nothing of LSP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from langserver.completion.context import Budget, Context, build_context
from langserver.completion.postprocess import Completion, clean
from langserver.completion.prompt import TEMPLATE_TOKENS, PromptRequest, Sampling, build_prompt
from langserver.settings import Settings

Generate = Callable[[PromptRequest], Awaitable[str]]


@dataclass(frozen=True)
class Request:
    text: str
    offset: int  # code points, not client units
    language: str = ""


def budget_for(settings: Settings, max_model_len: int | None) -> Budget:
    """Budget for prefix+suffix: the setting, but never past the model's context."""
    completion = settings.completion
    tokens = completion.context_tokens
    if max_model_len:
        tokens = min(tokens, max(16, max_model_len - completion.max_tokens - TEMPLATE_TOKENS))
    budget = Budget.from_tokens(tokens)
    if completion.context_chars:
        budget = Budget.from_chars(min(completion.context_chars, budget.total))
    return budget


def make_context(request: Request, settings: Settings, max_model_len: int | None) -> Context:
    return build_context(request.text, request.offset, budget_for(settings, max_model_len), request.language)


def make_prompt(context: Context, settings: Settings) -> PromptRequest:
    sampling = Sampling(max_tokens=settings.completion.max_tokens,
                        temperature=settings.completion.temperature)
    return build_prompt(context, settings.model.prompt_format, sampling)


async def complete(request: Request, settings: Settings, generate: Generate,
                   max_model_len: int | None = None) -> Completion | None:
    context = make_context(request, settings, max_model_len)
    raw = await generate(make_prompt(context, settings))
    return clean(raw, context)
