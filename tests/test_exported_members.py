"""The public API of ``odpmap`` is pinned by ``__all__`` (the httpx test)."""

from __future__ import annotations

import __future__
import types

import odpmap
import pytest


def test_all_names_the_public_members() -> None:
    public = [
        name
        for name, value in vars(odpmap).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # submodules, bound by their import
        and not isinstance(value, __future__._Feature)  # `from __future__ import annotations`
    ]
    assert odpmap.__all__ == sorted([*public, "__version__"])


def test_every_exported_name_resolves() -> None:
    for name in odpmap.__all__:
        assert getattr(odpmap, name) is not None
    assert isinstance(odpmap.__version__, str) and odpmap.__version__ != "0.0.0+unknown"


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="^module 'odpmap' has no attribute 'nope'$"):
        odpmap.nope  # noqa: B018
