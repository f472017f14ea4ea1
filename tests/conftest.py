"""Shared fixtures. Keep this file small: helpers that belong to one module stay there."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from odpmap import Engine


# -- mapping files and hermetic engines (tests/test_engine.py, test_mapping_*.py) ------


@pytest.fixture
def mapping_dir(tmp_path: Path) -> Path:
    """An empty folder whose ``*.yaml`` files ``hermetic_engine`` loads as providers."""
    folder = tmp_path / "mappings"
    folder.mkdir()
    return folder


@pytest.fixture
def write_mapping(mapping_dir: Path) -> Callable[[str, str], Path]:
    """``write_mapping("acme.yaml", text)``: write dedented YAML into ``mapping_dir``."""

    def write(name: str, text: str) -> Path:
        path = mapping_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def hermetic_engine(mapping_dir: Path) -> Callable[..., Engine]:
    """``hermetic_engine(**kw)``: built-ins plus ``mapping_dir``, no entry-point plugins."""

    def make(**kw: Any) -> Engine:
        kw.setdefault("autoload", False)
        kw.setdefault("mapping_paths", [mapping_dir])
        kw.setdefault("environ", {})  # no ODPMAP_* variables from the caller's environment
        return Engine(**kw)

    return make
