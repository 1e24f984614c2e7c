"""Stage 3: the OpenAI-compatible streaming client.

Cancelling the awaiting task closes the HTTP stream; vLLM sees the disconnect
and aborts the generation, so superseded keystrokes stop costing GPU time.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai

from langserver.backend.request import Delta, PromptRequest


class BackendError(RuntimeError):
    """The backend failed in a way the user should hear about (once)."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # ends in /v1
    api_key: str
    model: str
    verify: bool | str = True  # False, True, or a CA bundle path


class BackendClient:
    def __init__(self, endpoint: Endpoint, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        # openai's own httpx flavour: whichever httpx major it was built on.
        verify: bool | ssl.SSLContext = endpoint.verify if isinstance(endpoint.verify, bool) \
            else ssl.create_default_context(cafile=endpoint.verify)
        self._http = openai.DefaultAsyncHttpxClient(
            verify=verify,
            timeout=timeout_s,
        )
        # Ids of the stop tokens in this model's vocabulary, when the server can tell.
        self.stop_token_ids: list[int] = []
        # vLLM fields every request carries (`priority`, `cache_salt`), once the server is known
        # to take them (backend/fields.py).
        self.request_fields: dict[str, Any] = {}
        self._openai = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key or "EMPTY",
            http_client=self._http,
            max_retries=0,  # a retried completion would arrive after the next keystroke
        )

    async def close(self) -> None:
        await self._openai.close()

    async def stream(self, request: PromptRequest) -> AsyncIterator[Delta]:
        """Yield the answer's pieces with their tokens' log probabilities and, on the last,
        the finish reason; closing the generator closes the HTTP stream. The log probability
        of the chosen token comes with the answer when the body asks for it (`logprobs`, set
        by the prompt stage when the confidence gate is on; confidence.py scores it)."""
        body = {**self.request_fields, **request.body}
        if self.stop_token_ids:
            body["stop_token_ids"] = self.stop_token_ids
        common = {
            key: body.pop(key)
            for key in ("max_tokens", "temperature", "top_p", "presence_penalty",
                        "frequency_penalty", "n", "stop")
            if key in body
        }
        try:
            if request.endpoint == "chat":
                messages = body.pop("messages")
                chat = await self._openai.chat.completions.create(
                    model=self.endpoint.model, messages=messages, stream=True,
                    extra_body=body, **common,
                )
                async with chat:
                    async for chunk in chat:
                        for choice in chunk.choices or ():
                            if (delta := _chat_delta(choice)) is not None:
                                yield delta
            else:
                prompt = body.pop("prompt")
                plain = await self._openai.completions.create(
                    model=self.endpoint.model, prompt=prompt, stream=True,
                    extra_body=body, **common,
                )
                async with plain:
                    async for part in plain:
                        for choice in part.choices or ():
                            if (delta := _plain_delta(choice)) is not None:
                                yield delta
        except (openai.OpenAIError, ValueError, KeyError, TypeError) as err:
            raise translate(err, self.endpoint) from err

    async def complete(self, request: PromptRequest) -> str:
        parts: list[str] = []
        stream = self.stream(request)
        try:
            async for delta in stream:
                parts.append(delta.text)
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        return "".join(parts)

    async def resolve_stop_tokens(self, tokens: tuple[str, ...]) -> list[int]:
        """Map stop tokens to ids with vLLM's /tokenize (no key needed); [] where unsupported."""
        root = self.endpoint.base_url.removesuffix("/").removesuffix("/v1")
        ids: list[int] = []
        for token in tokens:
            try:
                response = await self._http.post(root + "/tokenize", json={
                    "model": self.endpoint.model, "prompt": token, "add_special_tokens": False},
                    headers={"Authorization": f"Bearer {self.endpoint.api_key}"})
                found = response.json().get("tokens", []) if response.status_code == 200 else []
            except Exception:  # not vLLM, or no /tokenize: stop strings still work
                return []
            if len(found) == 1:
                ids.append(int(found[0]))
        self.stop_token_ids = ids
        return ids

    async def refusal(self, fields: dict[str, Any], chat: bool) -> str | None:
        """Why the server refuses a one-token request carrying `fields` (None: it accepts it).
        A request it refuses without them too means the check could not be made."""
        reason = await self.probe(fields, chat)
        if reason is None or not fields:
            return reason
        plain = await self.probe({}, chat)
        return f"the server refused it ({reason})" if plain is None else f"could not check ({plain})"

    async def probe(self, fields: dict[str, Any], chat: bool, logprobs: bool = False) -> str | None:
        """One token, streamed as completions are (a server may speak only that); with the chosen
        token's log probability where `logprobs` (as the confidence gate asks for it)."""
        wanted = {"logprobs": True if chat else 0} if logprobs else {}
        try:
            if chat:
                stream: Any = await self._openai.chat.completions.create(
                    model=self.endpoint.model, messages=[{"role": "user", "content": "a"}], max_tokens=1,
                    temperature=0, stream=True, extra_body={**fields, **wanted})
            else:
                stream = await self._openai.completions.create(
                    model=self.endpoint.model, prompt="a", max_tokens=1, temperature=0, stream=True,
                    extra_body={**fields, **wanted})
            async with stream:
                async for _ in stream:
                    pass
        except openai.APIStatusError as err:
            return f"{err.status_code}: {_brief(_message(err.body))}"
        except (openai.OpenAIError, ValueError, KeyError, TypeError) as err:
            return str(translate(err, self.endpoint))
        return None

    async def prefill(self, tokens: list[int]) -> str | None:
        """One token after a prompt of exactly these token ids (the completions endpoint takes ids);
        the problem, if any."""
        try:
            await self._openai.completions.create(model=self.endpoint.model, prompt=tokens, max_tokens=1,
                                                  temperature=0)
        except openai.OpenAIError as err:
            return str(translate(err, self.endpoint))
        return None

    async def model_info(self) -> dict[str, Any]:
        """The served model's entry from /v1/models (vLLM adds max_model_len)."""
        try:
            models = await self._openai.models.list()
        except openai.OpenAIError as err:
            raise translate(err, self.endpoint) from err
        for model in models.data:
            if model.id == self.endpoint.model:
                return model.model_dump()
        names = ", ".join(m.id for m in models.data) or "none"
        raise BackendError(f"model {self.endpoint.model!r} is not served there (served: {names})")


def _chat_delta(choice: Any) -> Delta | None:
    """A chat chunk's piece; None when it carries nothing (the role-only first chunk)."""
    text = choice.delta.content or ""
    content = choice.logprobs.content if choice.logprobs is not None else None
    logprobs = tuple((entry.token, entry.logprob) for entry in content or ())
    if not text and not logprobs and not choice.finish_reason:
        return None
    return Delta(text, logprobs, choice.finish_reason, choice.index or 0)


def _plain_delta(choice: Any) -> Delta | None:
    text = choice.text or ""
    found = choice.logprobs
    pairs = zip(found.tokens or (), found.token_logprobs or (), strict=False) if found is not None else ()
    logprobs = tuple((token, logprob) for token, logprob in pairs if logprob is not None)
    if not text and not logprobs and not choice.finish_reason:
        return None
    return Delta(text, logprobs, choice.finish_reason, choice.index or 0)


def translate(err: Exception, endpoint: Endpoint) -> BackendError:
    """One clear sentence per cause; the same cause always gives the same text (shown once)."""
    if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
        return BackendError(f"the backend at {endpoint.base_url} rejected the API key ({err.status_code}): "
                            "check vllmGhost.backend.apiKey")
    if isinstance(err, openai.NotFoundError):
        return BackendError(f"not found at {endpoint.base_url} (404): check vllmGhost.backend.url and "
                            "vllmGhost.model.name")
    if isinstance(err, openai.APIStatusError):
        return BackendError(f"backend answered {err.status_code}: {_brief(err.body)}")
    if isinstance(err, openai.APITimeoutError):
        return BackendError("backend timed out")
    if isinstance(err, openai.APIConnectionError):
        if _caused_by(err, ssl.SSLCertVerificationError):
            return BackendError(f"the TLS certificate of {endpoint.base_url} is not trusted: "
                                "set vllmGhost.backend.caBundle to its CA file")
        return BackendError(f"cannot reach backend at {endpoint.base_url}")
    # Garbage or truncated JSON in the stream.
    return BackendError(f"backend sent a malformed answer: {type(err).__name__}: {_brief(err)}")


def _message(body: object) -> object:
    """The error's own sentence from an OpenAI-style error body ({"error": {"message": ...}})."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return inner["message"]
        if "message" in body:
            return body["message"]
    return body


def _caused_by(err: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _brief(body: object) -> str:
    text = str(body)
    return text if len(text) <= 300 else text[:300] + "..."
