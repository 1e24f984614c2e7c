"""vllm-ghost: ghost-text code completions from a vLLM you run yourself."""

__version__ = "0.1.0"
