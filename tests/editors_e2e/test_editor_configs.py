"""The README's Neovim and Emacs configurations are the files the editor end-to-end tests load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Neovim and Emacs"


def readme_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION + "\n")
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(rf"^```{language}\n(.*?)^```$", text[start:end], flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize(("language", "file"), [("lua", "init.lua"), ("elisp", "init.el")])
def test_readme_block_is_the_tested_file(language: str, file: str) -> None:
    blocks = readme_blocks(language)
    assert len(blocks) == 1, f"one ```{language} block expected in {SECTION!r}, found {len(blocks)}"
    assert blocks[0] == (ROOT / "examples" / "editors" / file).read_text(), (
        f"README's {language} block differs from examples/editors/{file}: copy the file into the README")
