"""vLLM's Prometheus /metrics, read one way for every benchmark and test."""

from __future__ import annotations


def metric_sum(text: str, name: str) -> float:
    """Sum of a Prometheus counter or gauge `name` over its label sets in a /metrics text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
