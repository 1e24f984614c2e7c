"""Orchestration of one completion request: typing-through cache, scheduler (debounce,
latest wins), prefix warm-up, the pipeline, and the timings it records.

The server translates LSP into a `pipeline.Request` and the answer back into LSP;
everything between lives here. Errors propagate (TimeoutError past
`completion.timeoutMs`, BackendUnavailable, BackendError, anything else): the server
decides how the user hears of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from langserver.completion import pipeline
from langserver.completion.postprocess import Completion
from langserver.completion.serving.acceptance import Acceptance
from langserver.completion.serving.cache import CompletionCache
from langserver.completion.serving.scheduler import Scheduler, at_line_start
from langserver.completion.serving.warmup import Warmer
from langserver.completion.stages.context import Context, RepoContext
from langserver.completion.stages.stream import OpenStream
from langserver.completion.stages.timings import Timings, TimingStats
from langserver.completion.stages.tokens import CharEstimate, TokenCounter
from langserver.settings import Settings

log = logging.getLogger("vllm-ghost")
# Budgets cross-file snippets when the model's tokenizer is not on this machine.
ESTIMATE = CharEstimate()

# Other files' code for a prompt: (uri, text, offset, budget in tokens, counter, sources) ->
# the block, or None. The workspace (langserver/workspace) provides it; the server wires it in,
# so completion/ never imports the package that imports it.
CrossFile = Callable[[str, str, int, int, TokenCounter, tuple[str, ...]], RepoContext | None]
# (uri, text) -> True when nothing of the document may go into a prompt (a secret).
Forbidden = Callable[[str, str], bool]


class CompletionService:
    def __init__(self, open_stream: OpenStream, max_model_len: Callable[[], int | None],
                 cross_file: CrossFile | None = None, forbidden: Forbidden | None = None) -> None:
        self._max_model_len = max_model_len
        # Other files' code ahead of the current file, and the secret rule; without them: none
        # and nothing (the owner of the documents decides both).
        self._cross_file_source = cross_file
        self._forbidden = forbidden
        self.scheduler = Scheduler()  # latest wins per document, debounce
        self.timing_stats = TimingStats()  # per-stage p50/p95 for vllmGhost.status
        # Warm-ups for places vLLM has not prefilled; it sees every prompt's first token.
        self.warmer = Warmer(open_stream)
        self._stream = self.warmer.watch(open_stream)
        self.cache = CompletionCache()  # typing through a shown completion asks no one
        self._cache_settings: Settings | None = None
        self.acceptance = Acceptance()  # shown, accepted, retained, per language: local only
        # The last answer from the model: its confidence and whether it was shown (vllmGhost.status).
        self.last: dict[str, Any] | None = None

    def backend_ready(self) -> None:
        self.warmer.forget()  # a new vLLM has an empty prefix cache

    def forget(self, uri: str) -> None:
        self.scheduler.forget(uri)

    async def complete(self, uri: str, request: pipeline.Request, settings: Settings,
                       started: float | None = None) -> Completion | None:
        """The completion for `request` in document `uri`; None when there is none or a newer
        request for the document took over. `started`: when the client's request arrived."""
        started = time.monotonic() if started is None else started
        if self._forbidden is not None and self._forbidden(uri, request.text):  # a secret never goes into a prompt
            return None
        cached = self._cached(uri, request, settings)
        if cached is not None:
            return cached
        timings = Timings(started=started)
        built: list[Context] = []  # the context, when the warm-up built it first

        def build() -> Context:
            max_model_len = self._max_model_len()
            counter = pipeline.token_counter(settings)
            repo = self._cross_file(uri, request, settings, max_model_len, counter or ESTIMATE)
            return pipeline.make_context(request, settings, max_model_len, counter, repo)

        async def job() -> Completion | None:
            timings.mark("debounce")
            context = built[0] if built else build()  # counted in the "prompt" stage
            return await pipeline.complete_streaming(request, settings, self._stream, self._max_model_len(),
                                                     timings=timings, context=context)

        def warm() -> None:  # it delays the answer as much as it takes: overhead, not debounce
            built.append(build())
            self.warmer.warm(pipeline.make_warm_prompt(built[0], settings))
            timings.mark("warmup")

        outcome = await asyncio.wait_for(
            self.scheduler.run(uri, job, settings.completion.debounce_ms,
                               at_line_start(request.text, request.offset),
                               warm if settings.completion.warm_prefix_cache else None),
            settings.completion.timeout_ms / 1000,
        )
        if outcome.superseded:  # a newer request for the document took over
            return None
        self._record(timings)
        completion = self._gate(outcome.value, settings.completion.min_confidence)
        if completion is not None:
            self.cache.put(request.text, request.offset, completion)
        return completion

    async def complete_explicit(self, uri: str, request: pipeline.Request, settings: Settings,
                                started: float | None = None) -> list[Completion]:
        """The user asked (an explicit request): no debounce, no confidence gate (asking and
        getting nothing is the worst answer), and up to `completion.alternatives` different
        completions from one request. It supersedes the document's request in flight."""
        started = time.monotonic() if started is None else started
        if self._forbidden is not None and self._forbidden(uri, request.text):  # a secret never goes into a prompt
            return []
        timings = Timings(started=started)
        n = settings.completion.alternatives

        async def job() -> list[Completion]:
            timings.mark("debounce")
            max_model_len = self._max_model_len()
            counter = pipeline.token_counter(settings)
            repo = self._cross_file(uri, request, settings, max_model_len, counter or ESTIMATE)
            context = pipeline.make_context(request, settings, max_model_len, counter, repo)
            if n == 1:
                one = await pipeline.complete_streaming(request, settings, self._stream, max_model_len,
                                                        timings=timings, context=context)
                return [one] if one is not None else []
            return await pipeline.complete_alternatives(request, settings, self._stream, n, max_model_len,
                                                        timings=timings, context=context)

        outcome = await asyncio.wait_for(self.scheduler.run(uri, job, 0), settings.completion.timeout_ms / 1000)
        if outcome.superseded or outcome.value is None:
            return []
        self._record(timings)
        found = outcome.value
        confidence = found[0].confidence if found else None
        self.last = {**(confidence.to_wire() if confidence is not None else {"confidence": None}),
                     "shown": bool(found), "explicit": True, "alternatives": len(found)}
        if found:
            self.cache.put(request.text, request.offset, found[0])
        return found

    def _gate(self, completion: Completion | None, min_confidence: float) -> Completion | None:
        """Nothing when the model was unsure of it (below `completion.minConfidence`); an
        unknown confidence (a server without log probabilities) passes."""
        confidence = completion.confidence if completion is not None else None
        shown = completion is not None and (confidence is None or confidence.value >= min_confidence)
        self.last = {**(confidence.to_wire() if confidence is not None else {"confidence": None}),
                     "shown": shown, "minConfidence": min_confidence}
        return completion if shown else None

    def _cross_file(self, uri: str, request: pipeline.Request, settings: Settings, max_model_len: int | None,
                    counter: TokenCounter) -> RepoContext | None:
        if self._cross_file_source is None:
            return None
        # A budget of 0 (cross-file off, or no room) asks too: the source then records "none".
        budget = pipeline.cross_file_budget(settings, max_model_len)
        return self._cross_file_source(uri, request.text, request.offset, budget, counter,
                                       tuple(settings.completion.cross_file.sources))

    def _cached(self, uri: str, request: pipeline.Request, settings: Settings) -> Completion | None:
        """The rest of a shown completion the user is typing through; it supersedes the request
        in flight and counts as a keystroke for the typing rate, like any request."""
        if settings is not self._cache_settings:  # other settings, other completions and prompts
            self.cache, self._cache_settings = CompletionCache(), settings
            self.warmer.forget()
        cached = self.cache.get(request.text, request.offset)
        if cached is not None:
            self.scheduler.document(uri).note(settings.completion.debounce_ms)
            return dataclasses.replace(cached, typed_through=True)
        return None

    def _record(self, timings: Timings) -> None:
        self.timing_stats.add(timings)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("completion timings: %s", timings.describe())

    def status_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {}
        if self.timing_stats.count:
            detail["timings"] = self.timing_stats.summary()
        detail["cache"] = {"hits": self.cache.hits, "misses": self.cache.misses, "entries": len(self.cache)}
        detail["warmups"] = self.warmer.sent
        if self.last is not None:
            detail["last"] = self.last
        detail["acceptance"] = self.acceptance.summary()
        return detail

    def reset_timings(self) -> None:
        self.timing_stats = TimingStats()
