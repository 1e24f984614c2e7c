"""Cross-file context end to end: a real server over stdio, a real vLLM (external mode, the tiny
model), a workspace on disk. An open document's code reaches vLLM's prompt; an open secret never
does, and completing inside it sends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types

from bench.lsp import position_of
from bench.vllm_process import VllmServer, external_options
from tests.conftest import ReadyServer

pytestmark = pytest.mark.vllm

HELPERS = "".join(f"def parse_field_{n}(record, default=None):\n    return record.get('field_{n}', default)\n\n\n"
                  for n in range(12))
MAIN = "from pkg.helpers import parse_field_3\n\n\ndef load(record):\n    value = parse_field_"
SECRET = "API_TOKEN=parse_field_hunter2\n"


def metric(server: VllmServer, name: str) -> float:
    return server.metric(name)


async def test_open_document_reaches_the_prompt_and_a_secret_never_does(
        external_vllm: VllmServer, tmp_path: Path, ready_server: ReadyServer) -> None:
    root = tmp_path / "shop"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    for name, text in (("helpers.py", HELPERS), ("main.py", MAIN), (".env", SECRET)):
        (root / "pkg" / name).write_text(text)
    client = await ready_server(external_options(external_vllm, maxTokens=4), root=root)
    client.open(HELPERS, uri=(root / "pkg" / "helpers.py").as_uri())
    secret_uri = client.open(SECRET, language="dotenv", uri=(root / "pkg" / ".env").as_uri())
    main_uri = client.open(MAIN, uri=(root / "pkg" / "main.py").as_uri())

    before = metric(external_vllm, "vllm:prompt_tokens_total")
    await client.complete(main_uri, *position_of(MAIN, len(MAIN)))
    with_block = metric(external_vllm, "vllm:prompt_tokens_total") - before
    detail = (await client.command("vllmGhost.status"))["detail"]
    assert detail["crossFile"]["files"] == ["pkg/helpers.py"]
    assert detail["crossFile"]["tokens"] > 100

    # The same request without cross-file context: vLLM reads the helpers' code no more.
    options = external_options(external_vllm, maxTokens=4)
    options["completion"]["crossFile"] = {"enabled": False}
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=options))
    before = metric(external_vllm, "vllm:prompt_tokens_total")
    await client.complete(main_uri, *position_of(MAIN, len(MAIN)))
    alone = metric(external_vllm, "vllm:prompt_tokens_total") - before
    assert (await client.command("vllmGhost.status"))["detail"]["crossFile"]["files"] == []
    assert with_block - alone > 100, (with_block, alone)

    # Completing inside the secret file asks vLLM nothing.
    requests = metric(external_vllm, "vllm:request_success_total")
    assert await client.complete(secret_uri, 0, 10) == []
    assert metric(external_vllm, "vllm:request_success_total") == requests
    assert "hunter2" not in "".join(client.logs) + "".join(client.stderr)
