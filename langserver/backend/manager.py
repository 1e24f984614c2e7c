"""Owns the backend for the server: a managed vLLM or an external endpoint,
the client that talks to it, and the status the user sees."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from langserver.backend.client import BackendClient, BackendError, Endpoint
from langserver.backend.status import Status
from langserver.backend.vllm import LogCallback, ManagedVllm
from langserver.completion.prompt import STOP_TOKENS, PromptRequest
from langserver.settings import Settings


class BackendUnavailable(RuntimeError):
    """No backend to ask right now (starting, failed, stopped): answer empty at once."""


class BackendManager:
    def __init__(self, on_status: Callable[[Status], None], on_log: LogCallback) -> None:
        self._on_status = on_status
        self._on_log = on_log
        self.settings = Settings()
        self.status = Status("stopped", "not started")
        self.vllm: ManagedVllm | None = None
        self.client: BackendClient | None = None
        self.max_model_len: int | None = None
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None

    def _set_status(self, status: Status) -> None:
        self.status = status
        self._on_status(status)

    async def start(self, settings: Settings) -> None:
        async with self._lock:
            await self._start(settings)

    async def stop(self) -> None:
        async with self._lock:
            await self._stop()

    async def restart(self, settings: Settings | None = None) -> None:
        async with self._lock:
            await self._stop()
            await self._start(settings or self.settings)

    async def _start(self, settings: Settings) -> None:
        self.settings = settings
        self.max_model_len = None
        if settings.backend.mode == "external":
            self.client = BackendClient(external_endpoint(settings), settings.completion.timeout_ms / 1000)
            await self._probe_model()
            return
        self.vllm = ManagedVllm(settings, self._set_status, self._on_log)
        if not await self.vllm.start():
            return
        assert self.vllm.endpoint is not None
        self.client = BackendClient(self.vllm.endpoint, settings.completion.timeout_ms / 1000)
        await self._probe_model()
        if self.vllm.process is not None:
            self._watch = asyncio.create_task(self._watch_exit(self.vllm))

    async def _probe_model(self) -> None:
        assert self.client is not None
        detail: dict[str, object] = {"model": self.settings.model.name, "mode": self.settings.backend.mode,
                                     "url": self.client.endpoint.base_url}
        if self.vllm is not None:
            detail["pid"] = self.vllm.vllm_pid
            if self.vllm.ready_after_s is not None:
                detail["startupSeconds"] = round(self.vllm.ready_after_s, 2)
        try:
            info = await self.client.model_info()
        except BackendError as err:
            self._set_status(Status("error", str(err), detail))
            return
        except Exception as err:
            self._set_status(Status("error", f"cannot reach {self.client.endpoint.base_url}: {err}", detail))
            return
        stop_ids = await self.client.resolve_stop_tokens(STOP_TOKENS)
        detail["stopTokenIds"] = stop_ids
        length = info.get("max_model_len")
        self.max_model_len = length if isinstance(length, int) else None
        detail["maxModelLen"] = self.max_model_len
        self._set_status(Status("ready", f"{self.settings.model.name} ready", detail))

    async def _watch_exit(self, vllm: ManagedVllm) -> None:
        assert vllm.process is not None
        code = await vllm.process.wait()
        if not vllm._stopping:
            lines = list(vllm.tail)[-20:]
            self._set_status(Status("error", f"vLLM exited unexpectedly (code {code}); "
                                    "run 'vLLM Ghost: Restart Model'", {"lastLines": lines}))

    async def _stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
            self.client = None
        if self.vllm is not None:
            await self.vllm.stop()
            self.vllm = None
        else:
            self._set_status(Status("stopped", "backend stopped"))

    async def generate(self, prompt: PromptRequest) -> str:
        client = self.client
        external = self.settings.backend.mode == "external"
        if client is None or (self.status.state != "ready" and not external):
            raise BackendUnavailable(self.status.message or self.status.state)
        text = await client.complete(prompt)
        if external and self.status.state != "ready":
            await self._probe_model()
        return text


def external_endpoint(settings: Settings) -> Endpoint:
    backend = settings.backend
    key = backend.api_key or (os.environ.get(backend.api_key_env, "") if backend.api_key_env else "")
    verify: bool | str = backend.ca_bundle or backend.verify_tls
    return Endpoint(base_url=backend.url.rstrip("/"), api_key=key, model=settings.model.name, verify=verify)
