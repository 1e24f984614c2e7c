"""Cross-file context: the workspace's documents, edits and files, the rules for what may be
read, and the snippets that go ahead of the current file (Qwen's repository layout)."""

from langserver.workspace.workspace import SOURCES, Workspace

__all__ = ["SOURCES", "Workspace"]
