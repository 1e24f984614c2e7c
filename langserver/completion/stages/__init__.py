"""The stages a request goes through, each knowing nothing of LSP: context (prefix, suffix,
budget), prompt (the formats), stream (the early stop), confidence; tokens and timings serve them."""
