"""What vLLM is doing while it starts, read from its output lines, in words a user waiting on the
status bar can follow. A 30B model takes minutes, most of them in phases a line of vLLM's own log
does not name (H100, Qwen3-Coder-30B-A3B's shape: 50 s before the engine runs, 69 s compiling, 15 s
capturing CUDA graphs; small-coder-v2: 20 s finishing the engine after its graphs; docs/benchmarks.md)."""

from __future__ import annotations

import re

# In the order vLLM passes them; a line that matches none leaves the phase as it was.
_PHASES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(pattern), phase) for pattern, phase in (
    (r"Resolved architecture:", "inspecting the model"),
    (r"Initializing a V1 LLM engine", "starting the engine"),
    (r"Starting to load model|Loading safetensors checkpoint shards|Loading weights took", "reading the weights"),
    (r"for vLLM's torch\.compile|Dynamo bytecode transform|Compiling a graph for", "compiling the model"),
    (r"Directly load (AOT compilation|the compiled graph)", "loading the compiled model"),
    (r"Initial profiling|Profiling CUDA graph memory|KV cache memory|KV cache size:", "sizing the KV cache"),
    (r"Capturing CUDA graphs", "capturing CUDA graphs"),
    # After the graphs vLLM may print nothing for a while (20 s for small-coder-v2's first start on an
    # H100, 2026-12-06): the rest of its "init engine (profile, create kv cache, warmup model)".
    (r"Graph capturing finished|Free memory on device", "finishing the engine"),
    (r"init engine .* took|Starting vLLM (API )?server on", "starting the API server"),
))


def phase_of(line: str) -> str | None:
    """The start-up phase this vLLM output line begins or belongs to, if it names one."""
    for pattern, phase in _PHASES:
        if pattern.search(line):
            return phase
    return None
