"""Built-in Jinja filters, tests and globals for mapping templates.

Registered through ``odpmap_prepare_jinja_environment`` like any plugin's filters.
Every filter raises :class:`FilterError` (a :class:`ValueError`) on input it cannot
handle; the engine turns that into a ``template_error`` dead letter naming the template's
file and line. Reference with examples: docs/mapping-reference.md, "Filters".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import jinja2

from ..hookspecs import hookimpl

__all__ = ["FilterError", "MissingValueError", "as_int", "coalesce", "e164", "epoch", "from_json", "lookup"]


class FilterError(ValueError):
    """A filter got a value it cannot convert."""


class MissingValueError(FilterError):
    """A filter that needs a value got ``None``: the field is present but empty.

    ``{first: [...]}`` passes over a candidate failing this way, as it passes over a
    missing field.
    """


_MISSING = object()

# ISO 8601: date, "T" or space, time, optional fraction of any length, optional zone.
_ISO_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:[.,](?P<frac>\d+))?\s*(?P<tz>Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_NUMERIC_RE = re.compile(r"^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$")


def _divisor(magnitude: float) -> int:
    if magnitude >= 1e17:  # nanoseconds
        return 1_000_000_000
    if magnitude >= 1e14:  # microseconds
        return 1_000_000
    if magnitude >= 1e11:  # milliseconds
        return 1_000
    return 1


def _from_number(value: float) -> int:
    if isinstance(value, int):  # exact: no float rounding of nanosecond values
        d = _divisor(abs(value))
        return int(value / d) if value < 0 else value // d
    if math.isnan(value) or math.isinf(value):
        raise FilterError(f"epoch: {value!r} is not a time")
    return int(value / _divisor(abs(value)))


def _from_iso(text: str) -> int | None:
    m = _ISO_RE.match(text)
    if not m:
        return None
    date, time_, frac, tz = m.group("date", "time", "frac", "tz")
    time_ = time_ or "00:00:00"
    if len(time_) == 5:
        time_ += ":00"
    try:
        dt = datetime.strptime(f"{date}T{time_}", "%Y-%m-%dT%H:%M:%S")
    except ValueError as exc:
        raise FilterError(f"epoch: {text!r} is not a valid date: {exc}") from None
    if tz and tz not in ("Z", "z", "UTC"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60
        seconds = dt.replace(tzinfo=timezone.utc).timestamp() - sign * offset
    else:
        seconds = dt.replace(tzinfo=timezone.utc).timestamp()
    # Fractions of any length (Postmark sends 7 digits) are truncated to seconds.
    del frac
    return int(seconds)


def epoch(value: Any, format: str | None = None) -> int:  # noqa: A002 - Jinja keyword
    """Any common time representation -> integer epoch **seconds**.

    Accepts epoch seconds, milliseconds, microseconds or nanoseconds (numbers or numeric
    strings: the magnitude tells which), ISO 8601 with any number of fraction digits
    and ``Z``/``±HH:MM``/``±HHMM`` offsets (no offset means UTC), RFC 2822 dates, and
    with ``format=`` any :func:`datetime.strptime` layout (read as UTC unless it has %z).
    """
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None:
        raise MissingValueError("epoch: the value is null")
    if isinstance(value, bool):
        raise FilterError(f"epoch: {value!r} is not a time")
    if isinstance(value, (int, float)):
        return _from_number(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(dt.timestamp())
    if not isinstance(value, str):
        raise FilterError(f"epoch: cannot read a time from {type(value).__name__}")
    text = value.strip()
    if format is not None:
        try:
            dt = datetime.strptime(text, format)
        except ValueError as exc:
            raise FilterError(f"epoch: {value!r} does not match format {format!r}") from exc
        return int((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp())
    if _NUMERIC_RE.match(text):
        whole = text.lstrip("+")
        return _from_number(int(whole) if whole.lstrip("-").isdigit() else float(text))
    iso = _from_iso(text)
    if iso is not None:
        return iso
    try:
        dt = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        raise FilterError(f"epoch: {value!r} is not a recognised time (ISO 8601, RFC 2822 or epoch)") from None
    if dt is None:  # pragma: no cover - older Pythons return None
        raise FilterError(f"epoch: {value!r} is not a recognised time")
    return int((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp())


_PHONE_PREFIXES = ("whatsapp:", "tel:", "sms:", "mms:", "rcs:", "viber:", "messenger:")
_PHONE_JUNK = re.compile(r"[\s().\-/]")


def e164(value: Any, country_code: str | int | None = None) -> str:
    """A phone number -> E.164 (``+`` and 8-15 digits).

    Strips channel prefixes (``whatsapp:``, ``tel:``, ...), spaces, dots, dashes and
    parentheses; ``00`` becomes ``+``. A number without ``+`` is taken as international
    (providers such as Vonage send ``4527631111``), unless ``country_code`` is given and
    the number starts with a trunk ``0``, then that code replaces the ``0``.
    """
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None:
        raise MissingValueError("e164: the value is null")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FilterError(f"e164: {value!r} is not a phone number")
    text = str(value).strip()
    low = text.lower()
    for prefix in _PHONE_PREFIXES:
        if low.startswith(prefix):
            text = text[len(prefix) :]
            break
    # "+44 (0)20 ..." writes the national trunk 0 in brackets: not part of the number.
    text = re.sub(r"^(\+|00)(\d{1,3})\s*\(0\)", r"\1\2", text.strip())
    text = _PHONE_JUNK.sub("", text)
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+"):
        if country_code is not None and text.startswith("0"):
            text = f"+{str(country_code).lstrip('+')}{text[1:]}"
        else:
            text = "+" + text
    if not re.fullmatch(r"\+[1-9]\d{6,14}", text):
        raise FilterError(f"e164: {value!r} is not a valid international phone number")
    return text


@jinja2.pass_context
def lookup(context: jinja2.runtime.Context, key: Any, table: str, default: Any = _MISSING) -> Any:
    """Look ``key`` up in the mapping's table ``table`` (declared under ``tables:``).

    A key missing from the table is an error unless the table has a ``default`` entry
    or ``default=`` is given. Keys are compared as written in YAML, then as strings, so
    ``5 | lookup('codes')`` finds ``"5":``.
    """
    if isinstance(key, jinja2.Undefined):
        key._fail_with_undefined_error()
    tables = context.get("tables") or {}
    if table not in tables:
        raise FilterError(f"lookup: no table named {table!r} (declared: {', '.join(sorted(tables)) or 'none'})")
    entries = tables[table]
    if key in entries:
        return entries[key]
    skey = str(key).lower() if isinstance(key, bool) else str(key)
    if skey in entries:
        return entries[skey]
    if default is not _MISSING:
        return default
    if "default" in entries:
        return entries["default"]
    raise FilterError(f"lookup: {key!r} is not in table {table!r} and the table has no default")


def as_int(value: Any) -> int | None:
    """Strict integer conversion: ``"42"`` -> 42, ``42.0`` -> 42; anything else is an error.

    ``None`` passes through (the field is then left out).
    (Jinja's own ``int`` filter silently returns 0 for bad input.)
    """
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None:
        return None
    if isinstance(value, bool):
        raise FilterError(f"as_int: {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        return int(value)
    raise FilterError(f"as_int: {value!r} is not an integer")


def from_json(value: Any) -> Any:
    """Parse a JSON document held in a string (SNS ``Message``, Mandrill events, ...)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FilterError(f"from_json: not UTF-8: {exc}") from None
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise FilterError(f"from_json: not valid JSON: {exc}") from None


def nonempty(value: Any) -> Any:
    """``None`` for an empty string, list or dict (so the field is left out), else the value."""
    if isinstance(value, jinja2.Undefined):
        return None
    if value in ("", None) or (isinstance(value, (list, dict, tuple)) and not value):
        return None
    return value


def dig(value: Any, path: str, default: Any = None) -> Any:
    """Follow a dotted ``path`` (``"mail.tags.campaign_id.0"``) through dicts and lists.

    Returns ``default`` where a step is missing: for data that is optional by nature.
    """
    current = value
    for step in path.split("."):
        if isinstance(current, Mapping) and step in current:
            current = current[step]
        elif isinstance(current, (list, tuple)) and step.lstrip("-").isdigit() and -len(current) <= int(step) < len(current):
            current = current[int(step)]
        else:
            return default
    return current


def coalesce(*values: Any) -> Any:
    """The first value that is defined, not ``None`` and not ``""``; ``None`` if none is."""
    for v in values:
        if isinstance(v, jinja2.Undefined) or v is None or v == "":
            continue
        return v
    return None


def _regex(pattern: str, name: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise FilterError(f"{name}: invalid pattern {pattern!r}: {exc}") from None


def regex_replace(value: Any, pattern: str, replacement: str = "") -> str:
    """``re.sub(pattern, replacement, value)``."""
    return _regex(pattern, "regex_replace").sub(replacement, str(value))


def regex_search(value: Any, pattern: str, group: int = 0) -> str | None:
    """The first match of ``pattern`` in ``value`` (or its ``group``), else ``None``."""
    m = _regex(pattern, "regex_search").search(str(value))
    return m.group(group) if m else None


def _test_email(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value) is not None


FILTERS = {
    "as_int": as_int,
    "dig": dig,
    "e164": e164,
    "epoch": epoch,
    "from_json": from_json,
    "lookup": lookup,
    "nonempty": nonempty,
    "regex_replace": regex_replace,
    "regex_search": regex_search,
}
TESTS = {"email_address": _test_email}
GLOBALS = {"coalesce": coalesce}


@hookimpl
def odpmap_prepare_jinja_environment(env: jinja2.Environment) -> None:
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    env.globals.update(GLOBALS)
