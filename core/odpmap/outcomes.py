"""What mapping a report produces: events, skipped items and dead letters, with counts.

Every item of a report ends as exactly one of

* **mapped**: one or more ODP events (``MapResult.events``),
* **skipped**: a rule said so, with its reason (``MapResult.skipped``),
* **dead letter**: it could not be turned into valid events (``MapResult.dead_letters``),
  with a reason code, a message and the raw item, so that it can be replayed later.

``counts.received == counts.mapped + counts.skipped + counts.dead_lettered`` always holds.

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEAD_LETTER_REASONS",
    "Counts",
    "DeadLetter",
    "MapResult",
    "Skipped",
    "raw_to_jsonable",
]

#: The reason codes of a dead letter.
#:
#: ``unparseable``: the report body could not be parsed (the raw body is kept);
#: ``unmapped``: no rule of the provider's mapping matched the item;
#: ``template_error``: a template failed for this item (missing field, bad value);
#: ``invalid_event``: an event built for this item failed ODP validation;
#: ``rejected``: the destination (e.g. the ODP API) refused the event.
DEAD_LETTER_REASONS = ("unparseable", "unmapped", "template_error", "invalid_event", "rejected")


def raw_to_jsonable(raw: Any) -> Any:
    """Return ``raw`` in a form ``json.dumps`` accepts, losing nothing.

    Bytes that are valid UTF-8 become text; other bytes become ``{"base64": ...}``.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode("ascii")}
    return raw


@dataclass(frozen=True)
class Skipped:
    """An item a rule skipped on purpose."""

    provider: str
    index: int
    rule_id: str
    reason: str
    item: Any = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DeadLetter:
    """An item (or a whole report) that could not become valid events.

    :ivar reason: one of :data:`DEAD_LETTER_REASONS`
    :ivar message: what went wrong, for a person (names file:line, field or rule)
    :ivar provider: the provider name
    :ivar rule_id: the rule that was applied, or ``None``
    :ivar item: the raw item (for ``unparseable``: the raw body as text or base64)
    :ivar index: position of the item in its report (``None`` for a whole report)
    :ivar details: machine-readable extras (validation errors, the offending event, ...)
    :ivar content_type: the report's content type, kept so a replay parses it the same way
    """

    reason: str
    message: str
    provider: str
    item: Any = field(repr=False)
    rule_id: str | None = None
    index: int | None = None
    details: dict[str, Any] = field(default_factory=dict, repr=False)
    content_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["item"] = raw_to_jsonable(self.item)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, default=str)


@dataclass
class Counts:
    """Counts for one or more reports. ``received == mapped + skipped + dead_lettered``.

    ``events`` is the number of ODP events produced (an item may produce several);
    ``duplicates`` counts items skipped because they repeated an earlier item's id;
    ``unattributed`` counts events that carry no campaign tracking fields.
    """

    received: int = 0
    mapped: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    events: int = 0
    duplicates: int = 0
    unattributed: int = 0

    def add(self, other: Counts) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def balanced(self) -> bool:
        return self.received == self.mapped + self.skipped + self.dead_lettered

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (
            f"received={self.received} mapped={self.mapped} skipped={self.skipped} "
            f"dead_lettered={self.dead_lettered} events={self.events}"
            + (f" duplicates={self.duplicates}" if self.duplicates else "")
            + (f" unattributed={self.unattributed}" if self.unattributed else "")
        )


@dataclass
class MapResult:
    """The outcome of mapping one report (or several, when merged with :meth:`extend`)."""

    provider: str
    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)

    @property
    def ok(self) -> bool:
        """``True`` when nothing was dead-lettered."""
        return not self.dead_letters

    def extend(self, other: MapResult) -> None:
        self.events.extend(other.events)
        self.skipped.extend(other.skipped)
        self.dead_letters.extend(other.dead_letters)
        self.counts.add(other.counts)
