"""Handling of one request around the pipeline: the service (the one entry the server and the
CLI call), the scheduler (debounce, latest wins), the typing-through cache and the prefix warm-up."""
