"""odpmap: turn messaging providers' reports into Optimizely Data Platform events.

The public API. Everything else is reachable from submodules (``odpmap.sinks``,
``odpmap.errors``, ``odpmap.signatures``, ``odpmap.testing``, ...).
"""

from __future__ import annotations

from .engine import Engine, ProviderInfo, Sample
from .errors import (
    ConfigError,
    DispatchError,
    EventValidationError,
    MappingError,
    OdpmapError,
    PluginLoadError,
    ProcessingError,
    RenderError,
    UnknownProviderError,
)
from .hookspecs import hookimpl
from .outcomes import Counts, DeadLetter, MapResult, Skipped
from .registry import Provider
from .sinks import SendReport, Sink

__all__ = [
    "ConfigError",
    "Counts",
    "DeadLetter",
    "DispatchError",
    "Engine",
    "EventValidationError",
    "MapResult",
    "MappingError",
    "OdpmapError",
    "PluginLoadError",
    "ProcessingError",
    "Provider",
    "ProviderInfo",
    "RenderError",
    "Sample",
    "SendReport",
    "Sink",
    "Skipped",
    "UnknownProviderError",
    "__version__",
    "hookimpl",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("odpmap")
        except PackageNotFoundError:  # running from a source tree
            return "0.0.0+unknown"
    raise AttributeError(f"module 'odpmap' has no attribute {name!r}")
