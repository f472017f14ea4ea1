"""odpmap provider for SparkPost event webhooks.

Registers the ``sparkpost`` provider (its mapping ``sparkpost.yaml`` and sample reports)
and one Jinja filter, ``sparkpost_events``, that the mapping's ``items:`` uses.

Why a filter: a SparkPost batch is a JSON array of envelopes, ``[{"msys": {"<class>_event":
{...}}}, ...]``, and the items to map are the inner event objects. Jinja can flatten that
(``map('dictsort') | sum(start=[]) | map('last')``), but then one malformed envelope fails
the whole expression and the entire batch (up to thousands of events) becomes a single
``template_error`` dead letter. The filter isolates faults per envelope: an element that is
not a ``{"msys": {...}}`` object is passed through as its own item, so it alone becomes an
``unmapped`` dead letter while the rest of the batch is mapped. The webhook test ping
``[{"msys": {}}]`` yields no items.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

import jinja2

from odpmap import Provider, hookimpl

__all__ = ["odpmap_prepare_jinja_environment", "odpmap_register_providers", "sparkpost_events"]


def sparkpost_events(report: Any) -> list[Any]:
    """The event objects of a SparkPost webhook batch, in order.

    ``[{"msys": {"message_event": {...}}}, {"msys": {}}]`` -> ``[{...}]``. A single envelope
    (not in an array) is read as a batch of one. An element without an ``msys`` object is
    returned unchanged, to be dead-lettered on its own.
    """
    if isinstance(report, jinja2.Undefined):
        report._fail_with_undefined_error()
    batch = report if isinstance(report, (list, tuple)) else [report]
    events: list[Any] = []
    for element in batch:
        msys = element.get("msys") if isinstance(element, Mapping) else None
        if isinstance(msys, Mapping):
            events.extend(msys.values())  # one "<class>_event" key per envelope; none in the ping
        else:
            events.append(element)
    return events


@hookimpl
def odpmap_prepare_jinja_environment(env: jinja2.Environment) -> None:
    env.filters["sparkpost_events"] = sparkpost_events


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "sparkpost.yaml", samples=here / "samples"))
