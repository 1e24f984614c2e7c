"""The confidence score and the gate, without a model: what is scored, and what is hidden."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from langserver.backend.request import Delta, PromptRequest
from langserver.completion import pipeline
from langserver.completion.serving.service import CompletionService
from langserver.completion.stages.confidence import CUT_FACTOR, score, shown_range, token_spans
from langserver.completion.stages.stream import OpenStream
from langserver.settings import CompletionSettings, parse_settings

SURE, UNSURE = math.log(0.9), math.log(0.05)


def tokens(*pairs: tuple[str, float], finish: str | None = None) -> list[Delta]:
    """One piece per token, as vLLM streams them; the last carries `finish`."""
    parts = [Delta(text, ((text, logprob),)) for text, logprob in pairs]
    if finish is not None:
        last = parts[-1]
        parts[-1] = Delta(last.text, last.logprobs, finish)
    return parts


def test_spans_follow_the_tokens_text_and_the_end_token_sits_at_the_end() -> None:
    # vLLM holds text back while it could start a stop string: it arrives with later tokens.
    parts = [Delta("", (("return", -1.0),)), Delta("return a +", ((" a", -2.0), (" +", -3.0))),
             Delta("", (("<|im_end|>", -0.5),), "stop")]
    assert token_spans(parts) == [(0, 6, -1.0), (6, 8, -2.0), (8, 10, -3.0), (10, 10, -0.5)]


def test_shown_text_is_found_whitespace_aside() -> None:
    raw = "```python\n\treturn x\n\tprint(x)\n```"
    assert shown_range(raw, "    return x\n    print(x)") == (11, 29)
    # Not found in order: the whole answer is scored.
    assert shown_range("abc", "xyz") == (0, 3)


def test_the_score_is_the_probability_of_the_shown_tokens_and_the_one_that_ended_them() -> None:
    parts = tokens(("return", SURE), (" a", SURE), ("\n", SURE), ("junk", UNSURE), ("more", UNSURE))
    confidence = score(parts, "early", "return a")
    assert confidence is not None
    assert confidence.value == pytest.approx(0.9 ** 3) and confidence.tokens == 3
    assert confidence.end_logprob == pytest.approx(SURE) and confidence.finish == "early"


def test_text_clean_up_dropped_does_not_count() -> None:
    # An echoed FIM token and a fence the model was unsure of, around a line it was sure of.
    parts = tokens(("<|fim_middle|>", UNSURE), ("```", UNSURE), ("python\n", UNSURE), ("x = 1", SURE),
                   ("\n", SURE), ("```", UNSURE))
    confidence = score(parts, "stop", "x = 1")
    assert confidence is not None and confidence.value == pytest.approx(0.9 ** 2)


def test_one_unsure_token_or_a_longer_answer_lowers_the_score() -> None:
    sure = score(tokens(("a", SURE), ("b", SURE), ("c", SURE), ("\n", SURE)), "early", "abc")
    one_bad = score(tokens(("a", SURE), ("b", UNSURE), ("c", SURE), ("\n", SURE)), "early", "abc")
    longer = score(tokens(*[("a", SURE)] * 12, ("\n", SURE)), "early", "a" * 12)
    assert sure is not None and one_bad is not None and longer is not None
    assert one_bad.value == pytest.approx(math.exp(3 * SURE + UNSURE))
    assert one_bad.min_logprob == pytest.approx(UNSURE) and one_bad.value < sure.value
    # A long run the model found easy token by token (a copied docstring, a loop) is still
    # one long guess: less likely as a whole than a short line.
    assert longer.value < sure.value and longer.mean_logprob == pytest.approx(sure.mean_logprob)


def test_a_max_tokens_cut_inside_the_shown_text_halves_the_score() -> None:
    cut = score(tokens(("x = f(", SURE), ("a,", SURE), finish="length"), "length", "x = f(a,")
    ended = score(tokens(("x = f(", SURE), ("a,", SURE), ("\n", SURE), finish="length"), "length", "x = f(a,")
    assert cut is not None and ended is not None
    assert cut.value == pytest.approx(0.9 ** 2 * CUT_FACTOR) and ended.value == pytest.approx(0.9 ** 3)


def test_no_logprobs_no_score() -> None:
    assert score([Delta("x = 1")], "stop", "x = 1") is None


def test_min_confidence_setting_falls_back_with_a_message_naming_it() -> None:
    settings, problems = parse_settings({"completion": {"minConfidence": 0.3}})
    assert settings.completion.min_confidence == 0.3 and problems == []
    for bad in (1.5, -0.1, "high", True):
        settings, problems = parse_settings({"completion": {"minConfidence": bad}})
        assert settings.completion.min_confidence == CompletionSettings().min_confidence
        assert len(problems) == 1 and problems[0].startswith("vllmGhost.completion.minConfidence:")


def backend(*pairs: tuple[str, float]) -> OpenStream:
    async def open_stream(prompt: PromptRequest) -> AsyncIterator[Delta]:
        for part in tokens(*pairs, finish="stop"):
            yield part

    return open_stream


@pytest.mark.parametrize(("min_confidence", "shown"), [(0.0, True), (0.5, True), (0.9, False)])
async def test_the_gate_hides_an_unsure_answer_and_the_status_says_why(min_confidence: float, shown: bool) -> None:
    service = CompletionService(backend(("total = 0", SURE), ("\n", SURE)), lambda: None)
    settings = parse_settings({"completion": {"minConfidence": min_confidence, "debounceMs": 0,
                                              "multiline": "never", "warmPrefixCache": False}})[0]
    text = "def f():\n    \n"
    completion = await service.complete("file:///a.py", pipeline.Request(text, 13, "python"), settings)
    assert (completion is not None) is shown
    last = service.status_detail()["last"]
    assert last["shown"] is shown and last["confidence"] == pytest.approx(0.81)
    assert last["minConfidence"] == min_confidence
