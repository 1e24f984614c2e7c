"""External endpoints for teams: a real vLLM behind TLS with its own CA, no API key."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.lsp import GhostClient, position_of, start_session
from bench.vllm_process import VllmServer, example, external_options, start_vllm, stop_vllm

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def tls_vllm(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VllmServer, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=vllm-ghost test CA",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server = start_vllm(test_model, "", tmp / "vllm.log", tls=(cert, key))
    yield server, cert
    stop_vllm(server.process)


async def completes(options: dict[str, object]) -> tuple[list[str], GhostClient]:
    client = await start_session(options)
    case = example("py_dict_literal")
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    items = await client.complete(uri, *position_of(text, len(case["prefix"])))
    await client.close_session()
    return [str(item.insert_text) for item in items], client


async def test_https_with_custom_ca_bundle_and_no_key(tls_vllm: tuple[VllmServer, Path]) -> None:
    server, cert = tls_vllm
    options = external_options(server)
    options["backend"] = {"mode": "external", "url": server.url + "/v1", "caBundle": str(cert)}
    texts, client = await completes(options)
    assert texts == [example("py_dict_literal")["middle"]]
    assert any(status["state"] == "ready" for status in client.statuses)


async def test_untrusted_certificate_is_refused_with_a_clear_message(tls_vllm: tuple[VllmServer, Path]) -> None:
    server, _ = tls_vllm
    options = external_options(server)
    options["backend"] = {"mode": "external", "url": server.url + "/v1"}  # verification on, no CA given
    texts, client = await completes(options)
    assert texts == []
    errors = [s for s in client.statuses if s["state"] == "error"]
    assert errors and "certificate" in errors[0]["message"] and "caBundle" in errors[0]["message"]
