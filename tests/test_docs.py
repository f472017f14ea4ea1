"""The examples in docs/ and README.md run, and their shown output is what they print.

In a Markdown file, in order:

* a fenced block with a title (```yaml title="acme.yaml"```) is written to that file
  in a scratch folder;
* a ```console``` block holds commands (lines starting with ``$ ``), each followed by
  its expected output (standard output and standard error together), compared exactly
  after trimming trailing spaces; ``...`` on a line of its own matches any lines;
* a ```python``` block is run with ``python`` in the scratch folder (README.md: the
  checkout), after the blocks
  before it; a ``# prints:`` comment block at its end, if any, is compared likewise.

Blocks fenced with ```text``` or without a language are prose and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
BIN = Path(sys.executable).parent


def blocks(path: Path) -> list[tuple[str, str, str | None, int]]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        info = m.group("info").strip()
        lang = info.split()[0] if info else ""
        title = TITLE.search(info)
        line = text.count("\n", 0, m.start()) + 1
        out.append((lang, m.group("body"), title.group("title") if title else None, line))
    return out


def _matches(expected: list[str], actual: list[str]) -> bool:
    pattern = "\n".join(".*?" if e == "..." else re.escape(e) for e in expected)
    pattern = pattern.replace("\n.*?\n", "(?:\n.*?)?\n").replace("\n.*?", "(?:\n.*)?").replace(".*?\n", "(?:.*\n)?")
    return re.fullmatch(pattern, "\n".join(actual), re.DOTALL) is not None


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ODPMAP_DOCS_ROOT"] = str(ROOT)
    env["PYTHONPATH"] = str(workdir)
    env.pop("ODPMAP_LOAD_PLUGINS", None)
    return env


def run_console(body: str, workdir: Path, where: str) -> None:
    lines = body.rstrip("\n").split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        command = lines[i][2:]
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i].rstrip())
            i += 1
        proc = subprocess.run(
            command, shell=True, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=120
        )
        actual = [ln.rstrip() for ln in (proc.stdout + proc.stderr).rstrip("\n").split("\n")] if (proc.stdout + proc.stderr).strip() else []
        while expected and not expected[-1]:
            expected.pop()
        assert _matches(expected, actual), (
            f"{where}: `{command}` printed:\n" + "\n".join(actual) + "\n--- expected:\n" + "\n".join(expected)
        )


def run_python(body: str, workdir: Path, where: str, scratch: Path) -> None:
    expected: list[str] = []
    code_lines = body.rstrip("\n").split("\n")
    if "# prints:" in code_lines:
        cut = code_lines.index("# prints:")
        expected = [ln[2:] if ln.startswith("# ") else ln[1:] for ln in code_lines[cut + 1 :]]
        code_lines = code_lines[:cut]
    script = scratch / "_doc_example.py"
    script.write_text("\n".join(code_lines) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{where}: example failed:\n{proc.stdout}\n{proc.stderr}"
    if expected:
        actual = [ln.rstrip() for ln in proc.stdout.rstrip("\n").split("\n")]
        assert _matches([e.rstrip() for e in expected], actual), (
            f"{where}: printed:\n" + "\n".join(actual) + "\n--- expected:\n" + "\n".join(expected)
        )


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_doc_examples_run(doc: Path, tmp_path: Path) -> None:
    # The README's examples use paths of the checkout; the docs' run in a scratch folder.
    workdir = ROOT if doc.name == "README.md" else tmp_path
    ran = 0
    for lang, body, title, line in blocks(doc):
        where = f"{doc.relative_to(ROOT)}:{line}"
        if title:
            target = tmp_path / title
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body, encoding="utf-8")
            continue
        if lang == "console":
            run_console(body, workdir, where)
            ran += 1
        elif lang == "python":
            run_python(body, workdir, where, tmp_path)
            ran += 1
    assert ran, f"{doc.name} has no runnable example"


def test_matcher_ellipsis() -> None:
    assert _matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert _matches(["a", "...", "d"], ["a", "d"])
    assert not _matches(["a", "d"], ["a", "b", "d"])
    assert not _matches(["a", "...", "d"], ["a", "b"])


