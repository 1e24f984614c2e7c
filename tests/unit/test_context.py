"""Context budget: shares, line cuts, window stability, CRLF/surrogates, the model's tokenizer."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from langserver.completion import pipeline
from langserver.completion.stages import context as ctx
from langserver.completion.stages.context import Budget, build_context
from langserver.completion.stages.tokens import CharEstimate, ModelTokenizer, count_text, counter_for, tokenizer_file
from langserver.settings import CompletionSettings, ModelSettings, Settings

SOURCE = "".join(f"def function_{i}(value):\n    return value * {i} + len('{'x' * (i % 13)}')\n\n" for i in range(400))


def test_constants_that_other_stages_rely_on() -> None:
    # The prefix cache (issue: latency) relies on this grid; change it only on purpose.
    assert ctx.PREFIX_SHARE == 0.875
    assert ctx.WINDOW_STEP_SHARE == 0.125


def test_budget_from_tokens_favours_the_prefix_7_to_1() -> None:
    # The suffix follows the cursor and misses vLLM's prefix cache on every keystroke: keep it small.
    budget = Budget.from_tokens(1000)
    assert (budget.prefix_tokens, budget.suffix_tokens) == (875, 125)
    assert (budget.prefix_chars, budget.suffix_chars) == (2625, 375)
    assert budget.step == 328


def test_cuts_fall_on_line_boundaries() -> None:
    offset = SOURCE.index("return value * 200")
    context = build_context(SOURCE, offset, Budget.from_chars(2000))
    start = offset - len(context.prefix)
    assert start > 0 and SOURCE[start - 1] == "\n"
    assert context.suffix.endswith("\n")
    assert len(context.prefix) <= 1750 + 1 and len(context.suffix) <= 250


def test_short_side_leaves_its_share_to_the_other() -> None:
    near_end = len(SOURCE) - 10
    context = build_context(SOURCE, near_end, Budget.from_chars(4000))
    assert len(context.prefix) > 3500  # took the suffix's unused share
    near_start = 10
    context = build_context(SOURCE, near_start, Budget.from_chars(4000))
    assert len(context.suffix) > 500


def _starts_while_typing(budget: Budget, counter: object = None, chars: int = 300) -> list[int]:
    """Type `chars` characters on a new line in the middle of the file: window start per keystroke."""
    base = SOURCE.index("def function_200")
    starts = []
    text = SOURCE
    for typed in range(chars):
        text = SOURCE[:base] + "x" * typed + SOURCE[base:]
        context = build_context(text, base + typed, budget, counter=counter)  # type: ignore[arg-type]
        starts.append(base + typed - len(context.prefix))
        assert text[starts[-1] - 1] == "\n"  # always at a line start
    return starts


def test_prefix_window_moves_in_coarse_steps_while_typing() -> None:
    budget = Budget.from_chars(2000)
    starts = _starts_while_typing(budget)
    moves = [b - a for a, b in itertools.pairwise(starts) if b != a]
    assert all(move > 0 for move in moves)
    # 300 characters typed, the window moves about once per step, never once per keystroke.
    assert len(moves) <= 300 // budget.step + 1
    assert all(move >= budget.step // 2 for move in moves)


def test_prefix_window_is_stable_with_a_token_counter_too() -> None:
    budget = Budget.from_tokens(600)
    starts = _starts_while_typing(budget, CharEstimate())
    moves = [b for a, b in itertools.pairwise(starts) if b != a]
    assert len(moves) <= 300 // budget.step + 1


class WobblyCounter:
    """Like BPE on a line being typed: a character more can mean a token fewer (a merge)."""

    exact = True

    def count_lines(self, lines: Iterable[str]) -> list[int]:
        return [len(line) // 3 + (len(line) % 2) * 2 for line in lines]


def test_prefix_window_does_not_jump_back_and_forth_as_the_cursor_line_is_typed() -> None:
    budget = Budget.from_tokens(600)
    # A line of code (150 characters, about 50 tokens here) is typed: the window holds still.
    starts = _starts_while_typing(budget, WobblyCounter(), chars=150)
    assert len(set(starts)) == 1, "the window moved while one line was typed: a prefix-cache miss each time"


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.sampled_from(["a", "b", " ", "\n", "\r\n", "\r", "é", "🚀", "\ud83d\ude80"]),
                  max_size=120).map("".join),
    offset=st.integers(0, 220),
    total=st.integers(1, 80),
)
def test_no_cut_inside_crlf_or_a_surrogate_pair(text: str, offset: int, total: int) -> None:
    offset = min(offset, len(text))
    for counter in (None, CharEstimate()):
        budget = Budget.from_chars(total) if counter is None else Budget.from_tokens(max(1, total // 3))
        context = build_context(text, offset, budget, counter=counter)
        start = offset - len(context.prefix)
        end = offset + len(context.suffix)
        assert text[start:offset] == context.prefix and text[offset:end] == context.suffix
        for cut in (start, end):  # the budget's cuts (the cursor itself is the client's)
            if 0 < cut < len(text) and cut != offset:
                assert not (text[cut - 1] == "\r" and text[cut] == "\n")
                assert not ("\ud800" <= text[cut - 1] <= "\udbff" and "\udc00" <= text[cut] <= "\udfff")


def test_safe_cut_moves_off_pairs() -> None:
    assert ctx._safe_cut("a\r\nb", 2) == 3
    assert ctx._safe_cut("a\ud83d\ude80b", 2) == 3
    assert ctx._safe_cut("abc", 1) == 1


# --- the model's tokenizer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a small byte-level BPE tokenizer.json, as a model dir would."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([SOURCE], trainer=trainer)
    directory = tmp_path_factory.mktemp("model")
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def test_counter_for_loads_the_model_tokenizer_once(model_dir: Path) -> None:
    counter = counter_for(str(model_dir))
    assert isinstance(counter, ModelTokenizer) and counter.exact
    assert counter_for(str(model_dir)) is counter
    assert count_text(counter, "return value\n") > 0


def test_counter_falls_back_to_the_character_estimate(tmp_path: Path) -> None:
    assert isinstance(counter_for(str(tmp_path)), CharEstimate)  # a dir without tokenizer.json
    assert tokenizer_file("no-such-org/no-such-model-for-vllm-ghost") is None
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "tokenizer.json").write_text("{not json")
    assert isinstance(counter_for(str(bad)), CharEstimate)


def test_token_window_fits_the_token_budget(model_dir: Path) -> None:
    counter = counter_for(str(model_dir))
    budget = Budget.from_tokens(500)
    offset = SOURCE.index("return value * 250")
    context = build_context(SOURCE, offset, budget, counter=counter)
    assert count_text(counter, context.prefix + context.suffix) <= budget.total_tokens
    # and it uses the budget: a window one step (and a line) longer would not fit
    start = offset - len(context.prefix)
    earlier = SOURCE.rfind("\n", 0, start - budget.step - 1) + 1
    assert count_text(counter, SOURCE[earlier:offset]) + ctx.CURSOR_LINE_GRAIN > budget.prefix_tokens


def test_suffix_keeps_its_share_mid_file_and_takes_the_rest_at_the_start(model_dir: Path) -> None:
    """After the cursor nothing is reused by vLLM's prefix cache: mid-file, the slack the
    prefix window's coarse steps leave is not handed to the suffix."""
    counter = counter_for(str(model_dir))
    budget = Budget.from_tokens(500)
    offset = SOURCE.index("return value * 250")
    for typed in ("", "r", "retu", "return v"):
        text = SOURCE[:offset] + typed + SOURCE[offset:]
        context = build_context(text, offset + len(typed), budget, counter=counter)
        assert count_text(counter, context.suffix) <= budget.suffix_tokens
    near_start = SOURCE.index("return value * 3 ")
    context = build_context(SOURCE, near_start, budget, counter=counter)
    assert context.prefix == SOURCE[:near_start]
    assert count_text(counter, context.suffix) > budget.suffix_tokens


def test_pipeline_uses_the_tokenizer_from_the_model_dir(model_dir: Path) -> None:
    settings = Settings(model=ModelSettings(path=str(model_dir)))
    assert isinstance(pipeline.token_counter(settings), ModelTokenizer)
    hub = Settings(model=ModelSettings(path="no-such-org/no-such-model-for-vllm-ghost"))
    assert pipeline.token_counter(hub) is None
    chars = Settings(model=ModelSettings(path=str(model_dir)), completion=CompletionSettings(context_chars=900))
    assert pipeline.token_counter(chars) is None  # an explicit character budget wins
