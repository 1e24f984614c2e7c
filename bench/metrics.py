"""vLLM's Prometheus /metrics, read one way for every benchmark and test."""

from __future__ import annotations

import httpx


def metric_sum(text: str, name: str, having: str = "") -> float:
    """Sum of a Prometheus counter or gauge `name` over its label sets in a /metrics text;
    `having`: only the lines that hold this text (a label value)."""
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and having in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def read_metric(url: str, name: str, having: str = "", timeout: float = 10.0) -> float:
    """`metric_sum` of the /metrics of the vLLM at `url` (its root, without /v1)."""
    return metric_sum(httpx.get(url + "/metrics", timeout=timeout).text, name, having)
