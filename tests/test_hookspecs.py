"""Meta-tests over the hook specifications (the datasette pattern).

* every hook is documented in docs/plugin-hooks.md with a heading ``name(args)``;
* every hook has a test named ``test_hook_<name>`` somewhere in tests/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from odpmap import hookspecs
from odpmap.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
HOOKS_DOC = ROOT / "docs" / "plugin-hooks.md"


def signature(name: str) -> str:
    pm = make_plugin_manager(autoload=False, environ={})
    spec = getattr(pm.hook, name).spec
    assert spec is not None, f"{name} has no hookspec"
    return f"{name}({', '.join(spec.argnames)})"


def test_hook_names_are_the_hookspecs() -> None:
    pm = make_plugin_manager(autoload=False, environ={})
    specced = sorted(name for name in dir(pm.hook) if not name.startswith("_") and getattr(pm.hook, name).spec)
    assert list(hookspecs.HOOK_NAMES) == specced
    assert all(name.startswith("odpmap_") for name in hookspecs.HOOK_NAMES)


@pytest.fixture(scope="module")
def doc_headings() -> list[str]:
    if not HOOKS_DOC.exists():
        pytest.fail(f"{HOOKS_DOC.relative_to(ROOT)} does not exist")
    text = HOOKS_DOC.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # headings only, not code comments
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{1,6} ", line)]


@pytest.mark.parametrize("name", hookspecs.HOOK_NAMES)
def test_hook_is_documented(name: str, doc_headings: list[str]) -> None:
    sig = signature(name)
    assert any(sig in heading for heading in doc_headings), f"no heading with {sig} in docs/plugin-hooks.md"


@pytest.fixture(scope="module")
def test_function_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names.update(
            node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        )
    return names


@pytest.mark.parametrize("name", hookspecs.HOOK_NAMES)
def test_hook_has_a_test(name: str, test_function_names: set[str]) -> None:
    assert f"test_hook_{name}" in test_function_names
