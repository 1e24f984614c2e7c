"""The vLLM fields every completion request carries: `priority` and `cache_salt`.

`priority` (lower runs first; requests without it are 0): on a vLLM started with
`--scheduling-policy priority`, the typist's short requests go ahead of Continue's long agent
prefills and answers, which send none. `cache_salt`: vLLM mixes it into the hash of a prompt's
first cache block, so only requests with the same salt share cached blocks; on a server shared by a
team, nobody else can hit (and so time) the blocks of this user's code.

Managed mode knows its vLLM's policy (it chose the flags) and sends no salt (one user). External
mode cannot know what answers at the URL: a FCFS vLLM (which may refuse a non-zero priority, as
its request schema warns), another version, a router, another OpenAI-compatible server that refuses
unknown fields. A field that server refused would fail every completion, so each is tried once with a
one-token request; what was refused is left off, and the status detail says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langserver.backend.client import BackendClient
from langserver.backend.launch import scheduling_policy
from langserver.backend.salt import cache_salt
from langserver.settings import Settings


@dataclass(frozen=True)
class RequestFields:
    """What to add to every request, and what the status detail says about it."""

    fields: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, object] = field(default_factory=dict)


def managed_fields(settings: Settings) -> RequestFields:
    priority = settings.backend.priority
    policy = scheduling_policy(settings.vllm)
    detail: dict[str, object] = {"schedulingPolicy": policy}
    if priority == 0:
        detail["priority"] = "off (backend.priority is 0)"
        return RequestFields({}, detail)
    if policy != "priority":
        detail["priority"] = f"not sent: vLLM schedules {policy} (vllm.schedulingPolicy)"
        return RequestFields({}, detail)
    detail["priority"] = priority
    return RequestFields({"priority": priority}, detail)


async def external_fields(client: BackendClient, settings: Settings) -> RequestFields:
    """Each wanted field, kept where a one-token request carrying it is accepted."""
    chat = settings.model.prompt_format == "chat-fim"
    wanted: dict[str, tuple[str, object]] = {}
    if settings.backend.priority:
        wanted["priority"] = ("priority", settings.backend.priority)
    if settings.backend.cache_salt:
        wanted["cacheSalt"] = ("cache_salt", cache_salt(client.endpoint.base_url))
    detail: dict[str, object] = {
        "priority": "off (backend.priority is 0)", "cacheSalt": "off (backend.cacheSalt is false)"}
    if not wanted:
        return RequestFields({}, detail)
    together = dict(wanted.values())
    if await client.probe(together, chat) is None:  # one request in the usual case
        refused: dict[str, str | None] = dict.fromkeys(wanted)
    else:
        refused = {name: await client.refusal(dict([pair]), chat) for name, pair in wanted.items()}
    fields: dict[str, Any] = {}
    for name, (key, value) in wanted.items():
        reason = refused[name]
        if reason is None:
            fields[key] = value
            detail[name] = value if key == "priority" else "on"
        else:
            detail[name] = f"not sent: {reason}"
    return RequestFields(fields, detail)
