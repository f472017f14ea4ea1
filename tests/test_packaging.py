"""The distributions ship what odpmap needs at run time: schemas, mappings, samples."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _wheel(source: Path, out: Path) -> zipfile.ZipFile:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


@pytest.fixture(scope="module")
def core_wheel(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _wheel(ROOT, tmp_path_factory.mktemp("core")).namelist()


def test_core_wheel_has_schemas_mappings_and_samples(core_wheel: list[str]) -> None:
    names = set(core_wheel)
    for required in ("odpmap/schemas/catalogue.yaml", "odpmap/schemas/event.yaml", "odpmap/mapping/schema.yaml",
                     "odpmap/mappings/vonage.yaml", "odpmap/py.typed"):
        assert required in names
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("odpmap/mappings/samples/vonage/")}
    on_disk = {p.name for p in (ROOT / "mappings" / "samples" / "vonage").iterdir() if p.is_file() and not p.name.startswith(".")}
    assert on_disk <= shipped


def test_core_wheel_has_no_core_package(core_wheel: list[str]) -> None:
    """core/ is a source root, never an import name."""
    assert not any(n.startswith("core/") for n in core_wheel)


def test_a_plugin_wheel_ships_its_mapping_and_samples(tmp_path: Path) -> None:
    names = set(_wheel(ROOT / "plugins" / "odpmap-sendgrid", tmp_path).namelist())
    assert "odpmap_sendgrid/sendgrid.yaml" in names
    samples = {p.name for p in (ROOT / "plugins/odpmap-sendgrid/src/odpmap_sendgrid/samples").iterdir() if not p.name.startswith(".")}
    assert {f"odpmap_sendgrid/samples/{s}" for s in samples} <= names
