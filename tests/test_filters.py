"""Tests for odpmap.builtins.filters: called directly and through compiled templates."""

from __future__ import annotations

import calendar
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import jinja2
import pytest

from odpmap.builtins import filters
from odpmap.builtins.filters import (
    FilterError,
    as_int,
    coalesce,
    dig,
    e164,
    epoch,
    from_json,
    nonempty,
    regex_replace,
    regex_search,
)
from odpmap.engine import Engine
from odpmap.templating import OdpmapEnvironment, compile_value

email_address = filters.TESTS["email_address"]


@pytest.fixture(scope="module")
def env() -> OdpmapEnvironment:
    return Engine(autoload=False).env


def render(env: OdpmapEnvironment, source: str, ctx: dict[str, Any] | None = None) -> Any:
    return compile_value(env, source, location=("t.yaml", 1, 1), pointer="p")(ctx or {})


def utc(*args: int) -> int:
    """Epoch seconds of a UTC date, computed independently of the filter."""
    return calendar.timegm(datetime(*args, tzinfo=timezone.utc).utctimetuple())


def at(offset_minutes: int, *args: int) -> int:
    """Epoch seconds of a local time with a UTC offset."""
    return int(datetime(*args, tzinfo=timezone(timedelta(minutes=offset_minutes))).timestamp())


# -- epoch -----------------------------------------------------------------------------

BASE = 1529692199  # 2018-06-22T18:29:59Z (Mailgun docs example)
POSTMARK = utc(2019, 11, 5, 16, 33, 54)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (BASE, BASE),
        (BASE * 1000 + 626, BASE),
        (BASE * 10**6 + 626182, BASE),
        (BASE * 10**9 + 626182000, BASE),
        (1529692199.626182, math.floor(1529692199.626182)),
        (0, 0),
    ],
    ids=["seconds", "milliseconds", "microseconds", "nanoseconds", "mailgun-float", "zero"],
)
def test_epoch_numbers(value: Any, expected: int) -> None:
    result = epoch(value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1591726752372", 1591726752),
        ("1591726752", 1591726752),
        ("1591726752.5", 1591726752),
        ("  1591726752  ", 1591726752),
        ("1e9", 10**9),
        ("1591726752372000", 1591726752),
    ],
    ids=["ms-string", "s-string", "fraction-string", "padded", "exponent", "us-string"],
)
def test_epoch_numeric_strings(value: str, expected: int) -> None:
    assert epoch(value) == expected


@pytest.mark.parametrize("digits", range(10), ids=[f"frac{n}" for n in range(10)])
def test_epoch_iso_fraction_digits_are_truncated(digits: int) -> None:
    fraction = "." + "9" * digits if digits else ""
    assert epoch(f"2019-11-05T16:33:54{fraction}Z") == POSTMARK


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2019-11-05T16:33:54Z", POSTMARK),
        ("2019-11-05T16:33:54.9070259Z", POSTMARK),
        ("2019-11-05T16:33:54", POSTMARK),
        ("2019-11-05T16:33:54UTC", POSTMARK),
        ("2019-11-05T16:33:54+00:00", POSTMARK),
        ("2019-11-05T16:33:54+02:00", at(120, 2019, 11, 5, 16, 33, 54)),
        ("2019-11-05T16:33:54-0500", at(-300, 2019, 11, 5, 16, 33, 54)),
        ("2019-11-05T16:33:54+0530", at(330, 2019, 11, 5, 16, 33, 54)),
        ("2019-11-05T16:33:54.907-08:00", at(-480, 2019, 11, 5, 16, 33, 54)),
        ("2019-11-05T16:33:54+02", at(120, 2019, 11, 5, 16, 33, 54)),
        ("2019-11-05 16:33:54", POSTMARK),
        ("2019-11-05 16:33:54 +02:00", at(120, 2019, 11, 5, 16, 33, 54)),
        ("2019-11-05T16:33", utc(2019, 11, 5, 16, 33)),
        ("2019-11-05", utc(2019, 11, 5)),
        ("2019-11-05T16:33:54,5Z", POSTMARK),
    ],
    ids=[
        "Z", "postmark-7-digits", "no-zone-is-utc", "UTC", "+00:00", "+02:00", "-0500", "+0530",
        "fraction-and-offset", "+02", "space", "space-offset", "no-seconds", "date-only", "comma-fraction",
    ],
)
def test_epoch_iso8601(value: str, expected: int) -> None:
    assert epoch(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 02 May 2017 11:24:03 +0000", utc(2017, 5, 2, 11, 24, 3)),
        ("Tue, 02 May 2017 11:24:03 GMT", utc(2017, 5, 2, 11, 24, 3)),
        ("02 May 2017 11:24:03 -0700", at(-420, 2017, 5, 2, 11, 24, 3)),
    ],
    ids=["+0000", "GMT", "no-weekday-offset"],
)
def test_epoch_rfc2822(value: str, expected: int) -> None:
    assert epoch(value) == expected


def test_epoch_format_vonage_scts() -> None:
    # Vonage sends scts as YYMMDDhhmm, UTC.
    assert epoch("1705021324", format="%y%m%d%H%M") == utc(2017, 5, 2, 13, 24)


def test_epoch_format_with_zone() -> None:
    assert epoch("2017-05-02 13:24 +0200", format="%Y-%m-%d %H:%M %z") == at(120, 2017, 5, 2, 13, 24)


def test_epoch_format_mismatch() -> None:
    with pytest.raises(FilterError, match=r"epoch: .*does not match format"):
        epoch("2017-05-02", format="%y%m%d%H%M")


def test_epoch_datetime_objects() -> None:
    assert epoch(datetime(2020, 1, 1)) == utc(2020, 1, 1)
    aware = datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert epoch(aware) == utc(2020, 1, 1) - 7200


@pytest.mark.parametrize(
    "value",
    [None, True, False, "nonsense", "2019-13-45T00:00:00Z", "2019-02-29", "2019-11-05T25:00:00Z", "", float("nan"), float("inf"), [], {}],
    ids=["none", "true", "false", "nonsense", "month-13", "feb-29-2019", "hour-25", "empty", "nan", "inf", "list", "dict"],
)
def test_epoch_bad_input(value: Any) -> None:
    with pytest.raises(FilterError, match=r"^epoch: ") as info:
        epoch(value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [BASE * 10**9 + 999_999_999, str(BASE * 10**9 + 999_999_999)], ids=["int", "str"])
def test_epoch_nanoseconds_are_truncated_exactly(value: Any) -> None:
    assert epoch(value) == BASE


def test_epoch_in_template(env: OdpmapEnvironment) -> None:
    assert render(env, "{{ item.ts | epoch }}", {"item": {"ts": "2019-11-05T16:33:54.9070259Z"}}) == POSTMARK
    assert render(env, "{{ item.scts | epoch(format='%y%m%d%H%M') }}", {"item": {"scts": "1705021324"}}) == utc(
        2017, 5, 2, 13, 24
    )


def test_epoch_in_template_bad_value(env: OdpmapEnvironment) -> None:
    with pytest.raises(FilterError, match="epoch"):
        render(env, "{{ item.ts | epoch }}", {"item": {"ts": "nonsense"}})


def test_epoch_in_template_missing_value_is_undefined_error(env: OdpmapEnvironment) -> None:
    with pytest.raises(jinja2.UndefinedError):
        render(env, "{{ item.ts | epoch }}", {"item": {}})


# -- e164 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("whatsapp:+14155238886", "+14155238886"),
        ("WhatsApp:+14155238886", "+14155238886"),
        ("sms:+14155238886", "+14155238886"),
        ("tel:+1 (415) 523-8886", "+14155238886"),
        ("+1.415.523.8886", "+14155238886"),
        ("0044 20 7946 0958", "+442079460958"),
        ("4527631111", "+4527631111"),
        (4527631111, "+4527631111"),
        ("  +14155238886  ", "+14155238886"),
        ("+1234567", "+1234567"),
        ("+123456789012345", "+123456789012345"),
    ],
    ids=[
        "whatsapp", "whatsapp-case", "sms", "tel-formatted", "dots", "00-prefix", "vonage-no-plus", "int",
        "padded", "shortest", "longest",
    ],
)
def test_e164_normalises(value: Any, expected: str) -> None:
    assert e164(value) == expected


@pytest.mark.parametrize("code", [44, "44", "+44"], ids=["int", "str", "plus"])
def test_e164_country_code_replaces_trunk_zero(code: Any) -> None:
    assert e164("020 7946 0958", country_code=code) == "+442079460958"


def test_e164_country_code_ignored_for_international_number() -> None:
    assert e164("+1 415 523 8886", country_code=44) == "+14155238886"


def test_e164_trunk_zero_without_country_code_is_rejected() -> None:
    with pytest.raises(FilterError, match="e164"):
        e164("020 7946 0958")


@pytest.mark.parametrize(
    "value",
    ["abc", "+0123", "+123456", "+1234567890123456", "", "+", "00", True, False, None, 1.5, ["+14155238886"]],
    ids=["letters", "leading-zero", "too-short", "too-long", "empty", "plus-only", "00-only", "true", "false", "none", "float", "list"],
)
def test_e164_rejects(value: Any) -> None:
    with pytest.raises(FilterError, match=r"^e164: "):
        e164(value)


def test_e164_drops_parenthesised_trunk_zero() -> None:
    assert e164("+44 (0)20 7946 0958") == "+442079460958"


def test_e164_in_template(env: OdpmapEnvironment) -> None:
    assert render(env, "{{ item.To | e164 }}", {"item": {"To": "whatsapp:+14155238886"}}) == "+14155238886"
    assert render(env, "{{ item.to | e164(country_code=44) }}", {"item": {"to": "020 7946 0958"}}) == "+442079460958"
    with pytest.raises(FilterError):
        render(env, "{{ item.to | e164 }}", {"item": {"to": "abc"}})


# -- lookup (needs the template context: through templates only) ----------------------

TABLES = {
    "codes": {"5": "five", 7: "seven-int-key", "true": "yes"},
    "with_default": {"a": "A", "default": "fallback"},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ '5' | lookup('codes') }}", "five"),
        ("{{ 5 | lookup('codes') }}", "five"),
        ("{{ 7 | lookup('codes') }}", "seven-int-key"),
        ("{{ true | lookup('codes') }}", "yes"),
        ("{{ 'zz' | lookup('codes', default='d') }}", "d"),
        ("{{ 'zz' | lookup('codes', default=none) }}", None),
        ("{{ 'a' | lookup('with_default') }}", "A"),
        ("{{ 'zz' | lookup('with_default') }}", "fallback"),
        ("{{ 'zz' | lookup('with_default', default='explicit') }}", "explicit"),
    ],
    ids=[
        "found", "int-key-via-str", "int-key-as-written", "bool-key", "default-arg", "default-none",
        "found-with-default-table", "table-default", "arg-beats-table-default",
    ],
)
def test_lookup(source: str, expected: Any, env: OdpmapEnvironment) -> None:
    assert render(env, source, {"tables": TABLES}) == expected


def test_lookup_with_item_value(env: OdpmapEnvironment) -> None:
    ctx = {"tables": TABLES, "item": {"code": 5}}
    assert render(env, "status={{ item.code | lookup('codes') }}", ctx) == "status=five"


def test_lookup_missing_table(env: OdpmapEnvironment) -> None:
    with pytest.raises(FilterError, match=r"lookup: no table named 'nope' \(declared: codes, with_default\)"):
        render(env, "{{ 5 | lookup('nope') }}", {"tables": TABLES})


def test_lookup_missing_table_when_none_declared(env: OdpmapEnvironment) -> None:
    with pytest.raises(FilterError, match=r"declared: none"):
        render(env, "{{ 5 | lookup('nope') }}", {"tables": {}})


def test_lookup_missing_key_without_default(env: OdpmapEnvironment) -> None:
    with pytest.raises(FilterError, match=r"lookup: 'zz' is not in table 'codes'"):
        render(env, "{{ 'zz' | lookup('codes') }}", {"tables": TABLES})


def test_lookup_undefined_key_is_undefined_error(env: OdpmapEnvironment) -> None:
    with pytest.raises(jinja2.UndefinedError):
        render(env, "{{ item.code | lookup('codes', default='d') }}", {"tables": TABLES, "item": {}})


# -- as_int ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("42", 42), (" -3 ", -3), ("+7", 7), (42, 42), (42.0, 42), (None, None)],
    ids=["str", "padded-negative", "plus", "int", "integral-float", "none-passes"],
)
def test_as_int(value: Any, expected: Any) -> None:
    result = as_int(value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "value",
    [42.5, "4.0", "abc", "", True, False, [], "1_000", "0x10"],
    ids=["fraction", "float-string", "letters", "empty", "true", "false", "list", "underscore", "hex"],
)
def test_as_int_is_strict(value: Any) -> None:
    with pytest.raises(FilterError, match=r"^as_int: "):
        as_int(value)


def test_as_int_in_template(env: OdpmapEnvironment) -> None:
    assert render(env, "{{ item.n | as_int }}", {"item": {"n": "12"}}) == 12
    assert render(env, "{{ item.n | as_int }}", {"item": {"n": None}}) is None
    with pytest.raises(FilterError):
        render(env, "{{ item.n | as_int }}", {"item": {"n": "twelve"}})
    # Unlike jinja's own int filter, which returns 0 for bad input:
    assert render(env, "{{ item.n | int }}", {"item": {"n": "twelve"}}) == 0


# -- from_json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [('{"a": 1}', {"a": 1}), (b"[1, 2]", [1, 2]), ("null", None), ({"a": 1}, {"a": 1}), (None, None), (5, 5)],
    ids=["str", "bytes", "null", "dict-passes", "none-passes", "int-passes"],
)
def test_from_json(value: Any, expected: Any) -> None:
    assert from_json(value) == expected


def test_from_json_invalid() -> None:
    with pytest.raises(FilterError, match=r"^from_json: not valid JSON"):
        from_json("{not json")


def test_from_json_invalid_bytes() -> None:
    with pytest.raises(FilterError, match="from_json"):
        from_json(b'"\xff"')


def test_from_json_in_template(env: OdpmapEnvironment) -> None:
    ctx = {"item": {"Message": '{"eventType": "Bounce", "mail": {"messageId": "m1"}}'}}
    assert render(env, "{{ (item.Message | from_json).mail.messageId }}", ctx) == "m1"


# -- nonempty --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ([], None), ({}, None), ((), None), (None, None), ("x", "x"), (0, 0), (False, False), (" ", " ")],
    ids=["empty-str", "empty-list", "empty-dict", "empty-tuple", "none", "str", "zero-kept", "false-kept", "space-kept"],
)
def test_nonempty(value: Any, expected: Any) -> None:
    result = nonempty(value)
    assert result == expected and type(result) is type(expected)


def test_nonempty_in_template_accepts_undefined(env: OdpmapEnvironment) -> None:
    assert render(env, "{{ item.missing | nonempty }}", {"item": {}}) is None
    assert render(env, "{{ item.tags | nonempty }}", {"item": {"tags": []}}) is None
    assert render(env, "{{ item.tags | nonempty }}", {"item": {"tags": ["a"]}}) == ["a"]


# -- dig -------------------------------------------------------------------------------

DOC = {"mail": {"tags": {"campaign_id": ["c-1", "c-2"]}, "n": 0}, "0": "zero-key"}


@pytest.mark.parametrize(
    ("path", "default", "expected"),
    [
        ("mail.tags.campaign_id.0", None, "c-1"),
        ("mail.tags.campaign_id.-1", None, "c-2"),
        ("mail.tags.campaign_id.2", "d", "d"),
        ("mail.tags.campaign_id.-3", "d", "d"),
        ("mail.missing.x", "d", "d"),
        ("mail.missing", None, None),
        ("mail.n", "d", 0),
        ("0", None, "zero-key"),
        ("mail.n.x", "d", "d"),
    ],
    ids=["list-index", "negative-index", "index-out-of-range", "negative-out-of-range", "missing", "missing-none",
         "falsy-value-kept", "digit-dict-key", "through-scalar"],
)
def test_dig(path: str, default: Any, expected: Any) -> None:
    assert dig(DOC, path, default) == expected


def test_dig_in_template(env: OdpmapEnvironment) -> None:
    assert render(env, "{{ item | dig('mail.tags.campaign_id.0') }}", {"item": DOC}) == "c-1"
    assert render(env, "{{ item | dig('mail.nope', 'none') }}", {"item": DOC}) == "none"


# -- coalesce --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [((None, "", 0, 1), 0), ((None, "", "x"), "x"), ((False, 1), False), ((), None), ((None, ""), None), (([], 1), [])],
    ids=["zero-counts", "skips-none-and-empty", "false-counts", "nothing", "all-empty", "empty-list-counts"],
)
def test_coalesce(values: tuple[Any, ...], expected: Any) -> None:
    result = coalesce(*values)
    assert result == expected and type(result) is type(expected)


def test_coalesce_in_template_skips_undefined(env: OdpmapEnvironment) -> None:
    # StrictUndefined would raise if coalesce touched the missing value.
    assert render(env, "{{ coalesce(item.a, item.b, 'fallback') }}", {"item": {"b": ""}}) == "fallback"
    assert render(env, "{{ coalesce(item.a, item.b) }}", {"item": {"b": 7}}) == 7


# -- regex_replace / regex_search ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "pattern", "replacement", "expected"),
    [("a-b-c", "-", "", "abc"), ("abc", "(b)", r"[\1]", "a[b]c"), (123, "2", "x", "1x3"), ("abc", "z", "y", "abc")],
    ids=["delete", "backref", "non-string", "no-match"],
)
def test_regex_replace(value: Any, pattern: str, replacement: str, expected: str) -> None:
    assert regex_replace(value, pattern, replacement) == expected


@pytest.mark.parametrize(
    ("value", "pattern", "group", "expected"),
    [("id=42;", r"id=(\d+)", 1, "42"), ("id=42;", r"id=(\d+)", 0, "id=42"), ("x", r"\d", 0, None), (12345, r"\d{2}", 0, "12")],
    ids=["group", "whole-match", "no-match", "non-string"],
)
def test_regex_search(value: Any, pattern: str, group: int, expected: str | None) -> None:
    assert regex_search(value, pattern, group) == expected


def test_regex_filters_in_template(env: OdpmapEnvironment) -> None:
    ctx = {"item": {"reason": "550 5.1.1 user unknown"}}
    assert render(env, r"{{ item.reason | regex_search('\\d\\.\\d\\.\\d') }}", ctx) == "5.1.1"
    assert render(env, r"{{ item.reason | regex_replace('^\\d+ ', '') }}", ctx) == "5.1.1 user unknown"


# -- the email_address test ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@b.co", True),
        ("first.last+tag@sub.example.org", True),
        ("a@b", False),
        ("a b@c.d", False),
        ("a@@b.co", False),
        ("", False),
        (None, False),
        (5, False),
    ],
    ids=["simple", "plus-tag", "no-dot", "space", "double-at", "empty", "none", "int"],
)
def test_email_address_test(value: Any, expected: bool, env: OdpmapEnvironment) -> None:
    assert email_address(value) is expected
    assert render(env, "{{ item.e is email_address }}", {"item": {"e": value}}) is expected


def test_email_address_test_in_condition(env: OdpmapEnvironment) -> None:
    source = "{% if item.to is email_address %}email{% else %}other{% endif %}"
    assert render(env, source, {"item": {"to": "x@example.com"}}) == "email"
    assert render(env, source, {"item": {"to": "+14155238886"}}) == "other"


def test_regex_filters_report_a_bad_pattern_as_a_filter_error() -> None:
    from odpmap.builtins.filters import FilterError, regex_replace, regex_search

    with pytest.raises(FilterError, match="regex_search: invalid pattern"):
        regex_search("abc", "(")
    with pytest.raises(FilterError, match="regex_replace: invalid pattern"):
        regex_replace("abc", "[", "")


def test_as_int_accepts_only_ascii_digits() -> None:
    from odpmap.builtins.filters import FilterError, as_int

    assert as_int(" 42 ") == 42
    with pytest.raises(FilterError):
        as_int("\u0663")  # ARABIC-INDIC DIGIT THREE
