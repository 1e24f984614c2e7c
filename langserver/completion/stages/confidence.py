"""How sure the model was of the text that is shown, from what vLLM returns with it.

The score is the probability the model gave the shown text (after clean-up) and its
ending there: the product of the probabilities of its tokens and of the token after
it (the line break or end token, which says the model meant to stop there). It is
deliberately not length-normalised. On HumanEval with small-coder the geometric mean
(the length-normalised score) ranked answers the wrong way round: its most confident
answers were long copies of the docstring or a loop of repeated lines, which the model
predicts easily token by token and which never pass, while the answers that pass are a
short statement (scripts/bench-gate, README "Confidence gate"). An answer cut short by
max_tokens inside the shown text did not end where the model wanted: its score is
halved. The gate (service.py) hides a completion whose score is below
`completion.minConfidence`.

Only the model's own tokens count: the text clean-up drops (a fence, an echoed FIM
token, a run-on past the line) says nothing about the part that is shown. The shown
text is found in the raw answer line by line, whitespace aside, because clean-up may
re-indent it or drop the typed part of the line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from langserver.backend.request import Delta as Delta  # re-exported: postprocess reads stream pieces through stages

# A max_tokens cut inside the shown text: the model had not finished it.
CUT_FACTOR = 0.5


@dataclass(frozen=True)
class Confidence:
    value: float  # 0..1: the score the gate compares
    tokens: int  # the shown text's tokens that were scored (the end token included)
    mean_logprob: float  # their mean: exp of it is the length-normalised score (not used)
    min_logprob: float
    end_logprob: float | None  # the token right after the shown text, if the model sent one
    finish: str | None  # "stop", "length", "early" (the server's early stop), None

    def to_wire(self) -> dict[str, object]:
        return {"confidence": round(self.value, 6), "tokens": self.tokens,
                "meanLogprob": round(self.mean_logprob, 4), "minLogprob": round(self.min_logprob, 4),
                "endLogprob": None if self.end_logprob is None else round(self.end_logprob, 4),
                "finish": self.finish}


def token_spans(parts: Sequence[Delta]) -> list[tuple[int, int, float]]:
    """(start, end, logprob) of each token in the concatenated text, placed by the tokens'
    own text: vLLM holds a piece's text back while it could be the start of a stop string,
    so a piece's text need not be its tokens'. The end token (no text in the answer) sits
    at the end."""
    spans: list[tuple[int, int, float]] = []
    total = sum(len(part.text) for part in parts)
    pos = 0
    for part in parts:
        for token, logprob in part.logprobs:
            start = min(pos, total)
            pos += len(token)
            spans.append((start, min(pos, total), logprob))
    return spans


def shown_range(raw: str, shown: str) -> tuple[int, int]:
    """Where the shown text's lines are in the raw answer (whitespace aside); the whole
    answer when they cannot be found in order."""
    lines = [line.strip() for line in shown.split("\n") if line.strip()]
    pos, start = 0, -1
    for line in lines:
        found = raw.find(line, pos)
        if found < 0:
            return 0, len(raw)
        start = found if start < 0 else start
        pos = found + len(line)
    return (0, len(raw)) if start < 0 else (start, pos)


def score(parts: Sequence[Delta], finish: str | None, shown: str) -> Confidence | None:
    """The confidence of `shown` (the cleaned completion) given the stream's pieces and
    how it ended; None when the server sent no log probabilities."""
    spans = token_spans(parts)
    if not spans:
        return None
    raw = "".join(part.text for part in parts)
    start, end = shown_range(raw, shown)
    kept = [logprob for s, e, logprob in spans if e > start and s < end]
    after = [logprob for s, e, logprob in spans if s >= end and (e > s or s == len(raw))]
    end_logprob = after[0] if after else None
    scored = kept + ([end_logprob] if end_logprob is not None else [])
    if not scored:
        return None
    mean = sum(scored) / len(scored)
    value = math.exp(sum(scored))
    if finish == "length" and end_logprob is None:
        value *= CUT_FACTOR
    return Confidence(value=value, tokens=len(scored), mean_logprob=mean, min_logprob=min(scored),
                      end_logprob=end_logprob, finish=finish)
