from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from langserver.settings import Settings, parse_settings, redacted, to_wire


def test_defaults_round_trip_through_the_wire_format() -> None:
    settings, problems = parse_settings(to_wire(Settings()))
    assert settings == Settings() and problems == []


def test_section_wrapped_in_vllmghost_is_accepted() -> None:
    settings, problems = parse_settings({"vllmGhost": {"completion": {"maxTokens": 64}}})
    assert settings.completion.max_tokens == 64 and problems == []


def test_bad_values_fall_back_per_key() -> None:
    settings, problems = parse_settings({"completion": {"maxTokens": 0, "temperature": 0.2, "enabled": "yes"},
                                         "vllm": {"command": []}})
    assert settings.completion.max_tokens == 128
    assert settings.completion.temperature == 0.2
    assert settings.completion.enabled is True
    assert settings.vllm.command == ("vllm", "serve")
    assert len(problems) == 3
    assert all(p.startswith("vllmGhost.") for p in problems)


def test_secret_is_redacted() -> None:
    settings, _ = parse_settings({"backend": {"apiKey": "sk-secret"}})
    assert "sk-secret" not in str(redacted(settings))


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20))
def test_any_json_gives_valid_settings(raw: object) -> None:
    settings, _ = parse_settings(raw)
    assert isinstance(settings, Settings)
    assert settings.completion.max_tokens >= 1
