"""Cross-file context (langserver/workspace): sources, selection, the stable block, and the
safety rules, on real files in temporary workspaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from langserver.completion.stages.context import Context, RepoContext
from langserver.completion.stages.prompt import Sampling, build_prompt, fim_string, warm_prompt
from langserver.completion.stages.tokens import CharEstimate
from langserver.workspace import Workspace
from langserver.workspace.imports import imported_files
from langserver.workspace.safety import MAX_FILE_BYTES, Guard

COUNTER = CharEstimate()
HELPERS = "".join(f"def helper_{n}(value):\n    return value * {n}\n\n\n" for n in range(3)) + \
    "def parse_header(line, strict=False):\n    name, _, value = line.partition(':')\n    return name.strip()\n"
MAIN = "from pkg.helpers import parse_header\n\n\ndef read(lines):\n    for line in lines:\n        name = "


def uri(path: Path) -> str:
    return path.as_uri()


def make_repo(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "helpers.py").write_text(HELPERS)
    (root / "pkg" / "main.py").write_text(MAIN)
    return root


def workspace_for(root: Path) -> Workspace:
    workspace = Workspace()
    workspace.set_folders([str(root)])
    return workspace


def block(workspace: Workspace, path: Path, text: str | None = None, budget: int = 2000,
          sources: tuple[str, ...] = ("open", "edits", "imports")) -> RepoContext | None:
    text = path.read_text() if text is None else text
    if uri(path) not in workspace.documents:
        workspace.open(uri(path), str(path), text, "python")
    return workspace.cross_file(uri(path), text, len(text), budget, COUNTER, sources)


# --- the prompt layout ---------------------------------------------------------------------------
def test_repository_layout_in_both_formats() -> None:
    repo = RepoContext("proj", "pkg/main.py", (("pkg/a.py", "A = 1\n"), ("pkg/b.py", "B = 2")))
    context = Context(prefix="x = ", suffix="\n", repo=repo)
    expected = ("<|repo_name|>proj\n<|file_sep|>pkg/a.py\nA = 1\n<|file_sep|>pkg/b.py\nB = 2\n"
                "<|file_sep|>pkg/main.py\n<|fim_prefix|>x = <|fim_suffix|>\n<|fim_middle|>")
    assert fim_string(context) == expected
    assert build_prompt(context, "raw-fim", Sampling()).body["prompt"] == expected
    assert build_prompt(context, "chat-fim", Sampling()).body["messages"][1]["content"] == expected
    # Without other files' code the prompt is today's.
    plain = Context(prefix="x = ", suffix="\n", repo=RepoContext("proj", "pkg/main.py", ()))
    assert fim_string(plain) == "<|fim_prefix|>x = <|fim_suffix|>\n<|fim_middle|>"


def test_the_warm_up_primes_the_block() -> None:
    repo = RepoContext("proj", "m.py", (("a.py", "A = 1\n"),))
    prompt = warm_prompt(Context(prefix="import a\nx = a.", suffix="\n", repo=repo), "raw-fim")
    assert prompt.body["prompt"].startswith("<|repo_name|>proj\n<|file_sep|>a.py\nA = 1\n<|file_sep|>m.py\n")


# --- sources ---------------------------------------------------------------------------------------
def test_an_imported_workspace_file_is_read_from_disk(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    repo = block(workspace_for(root), root / "pkg" / "main.py", sources=("imports",))
    assert repo is not None
    assert repo.name == "proj" and repo.path == "pkg/main.py"
    assert [path for path, _ in repo.files] == ["pkg/helpers.py"]
    assert "def parse_header(line, strict=False):" in repo.files[0][1]


def test_python_imports_resolve_absolute_relative_and_submodules(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    (root / "pkg" / "sub").mkdir()
    (root / "pkg" / "sub" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "deep.py").write_text("X = 1\n")
    (root / "pkg" / "sub" / "other.py").write_text("Y = 1\n")
    (root / "top.py").write_text("Z = 1\n")
    text = ("import top\nfrom . import helpers\nfrom .sub.deep import X\nfrom ..outside import nothing\n"
            "from pkg.sub import other\nimport os, json\n")
    found = imported_files(root / "pkg" / "main.py", text, "python", [root])
    assert found == [root / "top.py", root / "pkg" / "helpers.py", root / "pkg" / "sub" / "deep.py",
                     root / "pkg" / "sub" / "__init__.py", root / "pkg" / "sub" / "other.py"]


def test_other_languages_take_same_folder_files(tmp_path: Path) -> None:
    (tmp_path / "a.ts").write_text("export const a = 1;\n")
    (tmp_path / "b.ts").write_text("export const b = 2;\n")
    (tmp_path / "c.js").write_text("x\n")
    assert imported_files(tmp_path / "a.ts", "", "typescript", [tmp_path]) == [tmp_path / "b.ts"]


def test_open_documents_same_language_first(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    workspace = workspace_for(root)
    other = root / "pkg" / "helpers.py"
    notes = root / "notes.md"
    workspace.open(uri(notes), str(notes), "parse_header name line value strip\n", "markdown")
    workspace.open(uri(other), str(other), HELPERS, "python")
    repo = block(workspace, root / "pkg" / "main.py", sources=("open",))
    assert repo is not None
    # Best last (nearest the cursor): the Python file, though the Markdown one shares more words.
    assert [path for path, _ in repo.files] == ["notes.md", "pkg/helpers.py"]


def test_recent_edits_of_other_documents(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    big = root / "big.py"
    lines = [f"value_{n} = {n}\n" for n in range(400)]
    workspace = workspace_for(root)
    workspace.open(uri(big), str(big), "".join(lines), "python")
    lines[300] = "edited_here = 300\n"
    workspace.change(uri(big), "".join(lines), 300, 300, 0)
    current = root / "main.py"
    repo = block(workspace, current, text="x = 1\n", sources=("edits",))
    assert repo is not None and len(repo.files) == 1
    assert "edited_here = 300" in repo.files[0][1]
    assert repo.files[0][1].count("\n") == 60


def test_no_workspace_or_a_file_outside_it_means_no_block(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    outside = tmp_path / "elsewhere.py"
    outside.write_text(MAIN)
    assert block(Workspace(), root / "pkg" / "main.py") is None  # no folders at all
    assert block(workspace_for(root), outside) is None


def test_selection_ranks_windows_and_keeps_the_budget(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    filler = "".join(f"unrelated_{n} = {n}\n" for n in range(200))
    other = root / "other.py"
    other.write_text(filler + "def parse_header(line):\n    name = line.strip()\n    return name\n" + filler)
    workspace = workspace_for(root)
    workspace.open(uri(other), str(other), other.read_text(), "python")
    repo = block(workspace, root / "main.py", text="def read(line):\n    name = parse_header(line)\n",
                 budget=400, sources=("open",))
    assert repo is not None
    assert all("parse_header" in content for _, content in repo.files)
    assert sum(len(content) for _, content in repo.files) / COUNTER.chars_per_token <= 400
    assert block(workspace, root / "main.py", text="x", budget=10) is None  # too small to be worth a block


# --- cache-friendliness ---------------------------------------------------------------------------
def test_the_block_holds_still_while_typing_and_appends_new_files(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    workspace = workspace_for(root)
    main = root / "pkg" / "main.py"
    text = MAIN
    first = block(workspace, main, text)
    assert first is not None
    for char in "parse_header(line)\n":  # typing in the current file
        text += char
        workspace.change(uri(main), text, text.count("\n"), text.count("\n"), 0)
        assert workspace.cross_file(uri(main), text, len(text), 2000, COUNTER) is first
    extra = root / "pkg" / "extra.py"
    workspace.open(uri(extra), str(extra), "def read_lines(lines):\n    return [line for line in lines]\n",
                   "python")
    grown = workspace.cross_file(uri(main), text, len(text), 2000, COUNTER)
    assert grown is not None and grown.files[:len(first.files)] == first.files  # appended, the head unchanged
    assert [path for path, _ in grown.files][len(first.files):] == ["pkg/extra.py"]


def test_a_stale_snippet_rebuilds_the_block(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    workspace = workspace_for(root)
    helpers = root / "pkg" / "helpers.py"
    workspace.open(uri(helpers), str(helpers), HELPERS, "python")
    first = block(workspace, root / "pkg" / "main.py", sources=("open",))
    assert first is not None
    changed = HELPERS.replace("strict=False", "strict=True")
    workspace.change(uri(helpers), changed, 6, 6, 0)
    main_text = (root / "pkg" / "main.py").read_text()
    again = workspace.cross_file(uri(root / "pkg" / "main.py"), main_text, len(main_text), 2000, COUNTER, ("open",))
    assert again is not None and "strict=True" in again.files[0][1] and "strict=False" not in again.files[0][1]


def test_the_block_is_deterministic(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    results = []
    for _ in range(2):
        workspace = workspace_for(root)
        for name in ("helpers.py", "__init__.py"):
            path = root / "pkg" / name
            workspace.open(uri(path), str(path), path.read_text(), "python")
        results.append(block(workspace, root / "pkg" / "main.py"))
    assert results[0] == results[1] and results[0] is not None


# --- safety -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [".env", ".env.local", "server.pem", "tls.key", "id_rsa", "id_rsa.pub"])
def test_secret_names_never_go_into_a_prompt(tmp_path: Path, name: str) -> None:
    root = make_repo(tmp_path / "proj")
    secret = root / "pkg" / name
    secret.write_text("parse_header = 'hunter2'\n")
    workspace = workspace_for(root)
    workspace.open(uri(secret), str(secret), secret.read_text(), "python")  # open in the editor
    repo = block(workspace, root / "pkg" / "main.py", sources=("open", "imports"))
    assert repo is not None and all("hunter2" not in content for _, content in repo.files)
    # Completing inside the secret file itself sends nothing either.
    assert workspace.forbidden(uri(secret), secret.read_text())


def test_a_private_key_header_is_a_secret_whatever_the_name(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    keyfile = root / "pkg" / "helpers.py"  # imported, and open
    keyfile.write_text("KEY = '''-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n'''\n" + HELPERS)
    workspace = workspace_for(root)
    assert block(workspace, root / "pkg" / "main.py", sources=("imports",)) is None
    workspace.open(uri(keyfile), str(keyfile), keyfile.read_text(), "python")
    assert block(workspace, root / "pkg" / "main.py", sources=("open",)) is None
    assert workspace.forbidden(uri(keyfile), keyfile.read_text())


def test_gitignored_files_are_skipped(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    (root / ".gitignore").write_text("pkg/helpers.py\n")
    assert block(workspace_for(root), root / "pkg" / "main.py") is None
    (root / ".gitignore").write_text("")
    (root / "pkg" / ".gitignore").write_text("help*.py\n")  # a nested .gitignore counts too
    assert block(workspace_for(root), root / "pkg" / "main.py") is None


def test_binary_non_utf8_and_oversized_files_are_skipped(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    helpers = root / "pkg" / "helpers.py"
    for content in (HELPERS.encode() + b"\0\1", HELPERS.encode() + "é".encode("latin-1"),
                    HELPERS.encode() + b"#" * MAX_FILE_BYTES):
        helpers.write_bytes(content)
        assert block(workspace_for(root), root / "pkg" / "main.py") is None
    helpers.write_text(HELPERS)
    assert block(workspace_for(root), root / "pkg" / "main.py") is not None


def test_a_link_out_of_the_workspace_is_not_followed(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "proj")
    outside = tmp_path / "outside.py"
    outside.write_text("def parse_header():\n    return 'outside secret'\n")
    (root / "pkg" / "helpers.py").unlink()
    os.symlink(outside, root / "pkg" / "helpers.py")
    workspace = workspace_for(root)
    assert block(workspace, root / "pkg" / "main.py") is None
    link = root / "pkg" / "helpers.py"
    workspace.open(uri(link), str(link), outside.read_text(), "python")  # open through the link
    assert block(workspace, root / "pkg" / "main.py") is None
    assert Guard([str(root)]).read(link) is None


def test_an_unreadable_file_costs_a_log_line_not_a_block(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_repo(tmp_path / "proj")
    other = root / "pkg" / "other.py"
    other.write_text("def parse_header(line):\n    return line\n")
    helpers = root / "pkg" / "helpers.py"
    read_bytes = Path.read_bytes

    def failing(path: Path) -> bytes:  # chmod 0 does not stop root, who runs the tests here
        if path.name == "helpers.py":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", failing)
    workspace = workspace_for(root)
    workspace.open(uri(other), str(other), other.read_text(), "python")
    with caplog.at_level("INFO", logger="vllm-ghost"):
        repo = block(workspace, root / "pkg" / "main.py")
    assert repo is not None and [path for path, _ in repo.files] == ["pkg/other.py"]
    assert any("cannot read" in record.getMessage() and str(helpers) in record.getMessage()
               for record in caplog.records)


# --- settings and budget ----------------------------------------------------------------------------
def test_the_budget_never_passes_the_models_context() -> None:
    from langserver.completion.pipeline import cross_file_budget
    from langserver.settings import parse_settings

    settings, problems = parse_settings({"completion": {"crossFile": {"maxTokens": 4000}}})
    assert not problems
    assert cross_file_budget(settings, None) == 4000
    # small-coder, trained at 3,072: what prefix+suffix (1,024), the answer (128) and the template leave.
    assert cross_file_budget(settings, 3072) == 3072 - 1024 - 128 - 48
    assert cross_file_budget(settings, 1200) == 0
    off, _ = parse_settings({"completion": {"crossFile": {"enabled": False}}})
    assert cross_file_budget(off, 200_000) == 0


def test_bad_cross_file_settings_fall_back_naming_the_key() -> None:
    from langserver.settings import parse_settings

    settings, problems = parse_settings({"completion": {"crossFile": {"sources": ["open", "clipboard"]}}})
    assert settings.completion.cross_file.sources == ("open", "edits", "imports")
    assert problems == ["vllmGhost.completion.crossFile.sources: items must be among 'open', 'edits', 'imports', "
                        "got ['clipboard']; using ('open', 'edits', 'imports')"]


def test_moving_far_ranks_again(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    other = root / "other.py"
    other.write_text("def alpha_helper(x):\n    return x\n" + "\n" * 200 + "def omega_helper(y):\n    return y\n")
    workspace = workspace_for(root)
    workspace.open(uri(other), str(other), other.read_text(), "python")
    text = "alpha_helper(1)\n" + "pass\n" * 300 + "omega_helper(2)\n"
    main = root / "main.py"
    workspace.open(uri(main), str(main), text, "python")
    near = workspace.cross_file(uri(main), text, 5, 2000, COUNTER, ("open",))
    far = workspace.cross_file(uri(main), text, len(text) - 3, 2000, COUNTER, ("open",))
    assert near is not None and far is not None
    assert "alpha_helper" in near.files[-1][1] and "omega_helper" in far.files[-1][1]


def test_the_definition_of_an_imported_name_is_favoured(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    # The file's other windows share more words with the code around the cursor than the definition does.
    noise = "".join(f"def read(lines):\n    for line in lines:\n        name = line.strip()  # {n}\n"
                    for n in range(40))
    other = root / "other.py"
    other.write_text(noise + "\n" * 40 + "class Framer:\n    def __init__(self, size):\n        self.size = size\n")
    workspace = workspace_for(root)
    workspace.open(uri(other), str(other), other.read_text(), "python")
    text = "from other import Framer\n\n\ndef read(lines):\n    for line in lines:\n        name = line.strip()\n" \
           "        framer = "
    repo = block(workspace, root / "main.py", text=text, budget=2000, sources=("open",))
    assert repo is not None and "class Framer:" in repo.files[-1][1]  # best last, nearest the cursor
