"""The pipeline's public entry point: context -> prompt -> backend -> postprocess.

The completion service (the server's and the CLI's path) and the benchmarks call
`complete_streaming`; `complete` replays a whole answer through it. It knows nothing of LSP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from langserver.backend.request import Delta, PromptRequest
from langserver.completion.postprocess import STEPS, Completion, Step, clean, is_complete, shown
from langserver.completion.postprocess.multiline import allows_multiline, keep_sure_lines
from langserver.completion.postprocess.policy import Policy
from langserver.completion.stages.confidence import score
from langserver.completion.stages.context import Budget, Context, RepoContext, build_context
from langserver.completion.stages.prompt import TEMPLATE_TOKENS, Sampling, build_prompt, warm_prompt
from langserver.completion.stages.stream import OpenStream, read_choices, read_until_complete
from langserver.completion.stages.timings import Timings
from langserver.completion.stages.tokens import CHARS_PER_TOKEN, TokenCounter, counter_for
from langserver.settings import Settings

Generate = Callable[[PromptRequest], Awaitable[str]]


@dataclass(frozen=True)
class Request:
    text: str
    offset: int  # code points, not client units
    language: str = ""
    # The editor's formatting options for this document, when the server knows them;
    # otherwise the indentation style is inferred from the text.
    tab_size: int | None = None
    insert_spaces: bool | None = None


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


def cross_file_budget(settings: Settings, max_model_len: int | None) -> int:
    """Tokens for other files' code: the setting, but only what the model's context leaves
    after the current file's budget, the answer and the template (0 = none)."""
    completion = settings.completion
    if not completion.cross_file.enabled:
        return 0
    tokens = completion.cross_file.max_tokens
    if max_model_len:
        used = budget_for(settings, max_model_len)
        current = used.total_tokens or int(used.total / CHARS_PER_TOKEN) + 1
        tokens = min(tokens, max_model_len - completion.max_tokens - TEMPLATE_TOKENS - current)
    return max(0, tokens)


def token_counter(settings: Settings) -> TokenCounter | None:
    """The model's own tokenizer when its tokenizer.json is on this machine (loaded once);
    None = budget by the character estimate."""
    if settings.completion.context_chars:
        return None
    counter = counter_for(settings.model.path)
    return counter if counter.exact else None


def make_context(request: Request, settings: Settings, max_model_len: int | None,
                 counter: TokenCounter | None = None, repo: RepoContext | None = None) -> Context:
    """The current file's prefix and suffix; `repo`: other files' code (langserver/workspace)."""
    context = build_context(request.text, request.offset, budget_for(settings, max_model_len), request.language,
                            counter)
    return dataclasses.replace(context, repo=repo) if repo is not None else context


def make_policy(request: Request, settings: Settings) -> Policy:
    return Policy(multiline=settings.completion.multiline, tab_size=request.tab_size,
                  insert_spaces=request.insert_spaces)


# Alternatives are sampled: greedy decoding would give `n` copies of one answer. They are
# ranked by the model's confidence, so the likeliest (usually the greedy one) comes first.
ALTERNATIVES_TEMPERATURE = 0.6


def wants_logprobs(context: Context, settings: Settings) -> bool:
    """Log probabilities are asked for when something uses them: the confidence gate
    (`minConfidence` > 0), or the line confidence where the policy may show several lines
    here (`lineConfidence` > 0; `auto` at the end of a line, `always`). A single-line
    answer without the gate asks for none."""
    completion = settings.completion
    if completion.min_confidence > 0:
        return True
    return completion.line_confidence > 0 and allows_multiline(context, Policy(multiline=completion.multiline))


def make_prompt(context: Context, settings: Settings, n: int = 1, *, logprobs: bool | None = None) -> PromptRequest:
    """The request for `context`: `n` alternatives (ranked by confidence, so they need log
    probabilities); `logprobs` overrides `wants_logprobs` (the benchmarks record them always)."""
    temperature = settings.completion.temperature
    if logprobs is None:
        logprobs = wants_logprobs(context, settings) or n > 1
    sampling = Sampling(max_tokens=settings.completion.max_tokens,
                        temperature=temperature if n == 1 else max(temperature, ALTERNATIVES_TEMPERATURE),
                        logprobs=logprobs, n=n)
    return build_prompt(context, settings.model.prompt_format, sampling)


def make_warm_prompt(context: Context, settings: Settings) -> PromptRequest:
    """The prefix warm-up for `context` (completion/warmup.py): its prompt's head, one token."""
    return warm_prompt(context, settings.model.prompt_format)


def keep_sure(completion: Completion, parts: tuple[Delta, ...], context: Context,
              threshold: float) -> Completion | None:
    """The multi-line answer up to the first statement the model was unsure of (multiline.py);
    None when what is left only repeats the code after the cursor. The clean-up drops such a
    copy, but it judged the whole block, whose later lines made it more than a copy: cut to
    `headers=headers,` above a `headers=headers,` line, it would show the line below again."""
    text = keep_sure_lines(completion.text, parts, context, threshold)
    if text == completion.text:
        return completion
    cut = shown(text, context)
    return None if cut is None else dataclasses.replace(completion, text=cut.text, replace_chars=cut.replace_chars)


async def complete(request: Request, settings: Settings, generate: Generate,
                   max_model_len: int | None = None, *, steps: tuple[Step, ...] = STEPS,
                   counter: TokenCounter | None = None) -> Completion | None:
    """One completion from an answer that comes whole (`generate`: a recorded one, a replay):
    the same path as the server's, `complete_streaming`, over a stream of one piece.
    `steps` = the clean-up steps (the benchmark's ablation drops one); `counter` overrides
    the token counter (default: the model's tokenizer if present)."""

    async def replay(prompt: PromptRequest) -> AsyncIterator[Delta]:
        yield Delta(await generate(prompt), finish_reason="stop")

    return await complete_streaming(request, settings, replay, max_model_len, counter=counter, steps=steps)


async def complete_streaming(request: Request, settings: Settings, open_stream: OpenStream,
                             max_model_len: int | None = None, *, timings: Timings | None = None,
                             counter: TokenCounter | None = None,
                             context: Context | None = None,
                             steps: tuple[Step, ...] = STEPS) -> Completion | None:
    """One completion, with the model's confidence in it, from a stream that is closed as
    soon as the clean-up would cut the rest anyway (vLLM stops generating then).
    `timings` gets prompt, first_token, stream and cleanup marks. `context`: the request's,
    when the caller built it already (the warm-up did). `steps`: the clean-up steps (the
    benchmark's ablation replays a recorded stream without one)."""
    timings = timings if timings is not None else Timings()
    if context is None:
        context = make_context(request, settings, max_model_len, counter or token_counter(settings))
    policy = make_policy(request, settings)
    prompt = make_prompt(context, settings)
    timings.mark("prompt")
    answer = await read_until_complete(open_stream(prompt), lambda text: is_complete(text, context, policy), timings)
    result = clean(answer.text, context, policy, steps)
    if result is not None:
        result = keep_sure(result, answer.parts, context, settings.completion.line_confidence)
    if result is not None:
        result = dataclasses.replace(result, confidence=score(answer.parts, answer.finish_reason, result.text))
    timings.mark("cleanup")
    return result


async def complete_alternatives(request: Request, settings: Settings, open_stream: OpenStream, n: int,
                                max_model_len: int | None = None, *, timings: Timings | None = None,
                                context: Context | None = None) -> list[Completion]:
    """Up to `n` different completions from ONE request asking for `n` answers (an explicit
    request: the user asked, so they get the choice): each cleaned up, duplicates after the
    clean-up dropped, the likeliest first."""
    timings = timings if timings is not None else Timings()
    if context is None:
        context = make_context(request, settings, max_model_len, token_counter(settings))
    policy = make_policy(request, settings)
    prompt = make_prompt(context, settings, n)
    timings.mark("prompt")
    answers = await read_choices(open_stream(prompt), n, lambda text: is_complete(text, context, policy), timings)
    found: dict[Completion, Completion] = {}
    for answer in answers:
        result = clean(answer.text, context, policy, STEPS)
        if result is None or not result.text.strip():
            continue
        scored = dataclasses.replace(result, confidence=score(answer.parts, answer.finish_reason, result.text))
        best = found.get(scored)
        if best is None or _likelihood(scored) > _likelihood(best):
            found[scored] = scored
    timings.mark("cleanup")
    return sorted(found.values(), key=_likelihood, reverse=True)


def _likelihood(completion: Completion) -> float:
    return completion.confidence.value if completion.confidence is not None else 0.0
