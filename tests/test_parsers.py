"""Tests for odpmap.builtins.parsers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from odpmap.builtins import parsers
from odpmap.builtins.parsers import parse_auto, parse_csv, parse_form, parse_json, parse_jsonl

# A raw Twilio SMS status callback (application/x-www-form-urlencoded), copied byte for
# byte from the project's shared samples; origin: department-of-veterans-affairs/
# notification-api tests.
TWILIO_FAILED = Path(__file__).parent / "data" / "reports" / "status-failed-30010-va-notify.form.txt"


# -- json ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": 1}', {"a": 1}),
        (b'[1, {"b": 2}]', [1, {"b": 2}]),
        (b'\xef\xbb\xbf{"a": 1}', {"a": 1}),
        (b'  \n{"a": "\xc3\xa9"}\n', {"a": "\u00e9"}),
    ],
    ids=["object", "array", "bom", "utf8-and-whitespace"],
)
def test_json(body: bytes, expected: Any) -> None:
    assert parse_json(body) == expected


def test_json_invalid_reports_line_and_column() -> None:
    with pytest.raises(ValueError, match=r"invalid JSON at line 2 column 7"):
        parse_json(b'{"a": 1,\n "b": }')


def test_json_trailing_data_is_invalid() -> None:
    with pytest.raises(ValueError, match=r"line 1 column 10"):
        parse_json(b'{"a": 1} x')


@pytest.mark.parametrize("body", [b"", b"  \n\t", b"\xef\xbb\xbf"], ids=["empty", "whitespace", "bom-only"])
def test_json_empty_body(body: bytes) -> None:
    with pytest.raises(ValueError, match="empty body"):
        parse_json(body)


@pytest.mark.parametrize(
    "body",
    [b'{"a": "\xff"}', '{"a": "\u00e9"}'.encode("latin-1")],
    ids=["ff-byte", "latin-1"],
)
def test_json_non_utf8_body(body: bytes) -> None:
    with pytest.raises(ValueError, match="not valid utf-8"):
        parse_json(body)


def test_json_encoding_option() -> None:
    assert parse_json('{"a": "\u00e9"}'.encode("latin-1"), options={"encoding": "latin-1"}) == {"a": "\u00e9"}


# -- jsonl -----------------------------------------------------------------------------


def test_jsonl_skips_blank_lines() -> None:
    body = b'{"a": 1}\n\n{"a": 2}\r\n   \n{"a": 3}'
    assert parse_jsonl(body) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_jsonl_reports_bad_line_number() -> None:
    # Line numbers count blank lines too: the bad document is on line 4 of the body.
    with pytest.raises(ValueError, match=r"invalid JSON on line 4"):
        parse_jsonl(b'{"a": 1}\n\n{"a": 2}\n{"a":\n{"a": 3}\n')


@pytest.mark.parametrize(("body", "expected"), [(b"", []), (b"\n\n", []), (b'\xef\xbb\xbf{"a":1}\n', [{"a": 1}])],
                         ids=["empty", "blank-lines", "bom"])
def test_jsonl_edge_cases(body: bytes, expected: list[Any]) -> None:
    assert parse_jsonl(body) == expected


def test_jsonl_non_utf8() -> None:
    with pytest.raises(ValueError, match="not valid utf-8"):
        parse_jsonl(b'{"a": "\xff"}\n')


# -- form ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "options", "expected"),
    [
        (b"a=1&a=2&b=3", None, {"a": ["1", "2"], "b": "3"}),
        (b"a=1&a=2&a=3", {"multi": "list"}, {"a": ["1", "2", "3"]}),
        (b"a=1&a=2&a=3", {"multi": "first"}, {"a": "1"}),
        (b"a=1&a=2&a=3", {"multi": "last"}, {"a": "3"}),
        (b"x=a+b%2Bc%20d&y=%C3%A9", None, {"x": "a b+c d", "y": "\u00e9"}),
        (b"?a=1&b=2", None, {"a": "1", "b": "2"}),
        (b"a=1&b=&c=", None, {"a": "1", "b": "", "c": ""}),
        (b"", None, {}),
        (b"a=1&b=2\n", None, {"a": "1", "b": "2"}),
        (b"To=%2B11111111111", None, {"To": "+11111111111"}),
    ],
    ids=["repeated-to-list", "multi-list", "multi-first", "multi-last", "plus-and-percent", "leading-question-mark",
         "blank-values-kept", "empty", "trailing-newline", "encoded-plus"],
)
def test_form(body: bytes, options: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert parse_form(body, options=options) == expected


@pytest.mark.parametrize("body", [b"a", b"a=1&&b=2"], ids=["no-equals", "empty-field"])
def test_form_invalid(body: bytes) -> None:
    with pytest.raises(ValueError, match="invalid form encoding"):
        parse_form(body)


def test_form_non_utf8() -> None:
    with pytest.raises(ValueError, match="not valid utf-8"):
        parse_form(b"a=\xff")


def test_twilio_status_callback_sample() -> None:
    body = TWILIO_FAILED.read_bytes()
    assert body.startswith(b"RawDlrDoneDate=") and b"%2B" in body
    parsed = parse_form(body)
    assert parsed == {
        "RawDlrDoneDate": "2303092021",
        "ErrorCode": "30010",
        "SmsSid": "SMxxx",
        "SmsStatus": "failed",
        "MessageStatus": "failed",
        "To": "+11111111111",
        "MessageSid": "SMyyy",
        "AccountSid": "ACzzz",
        "From": "+12222222222",
        "ApiVersion": "2010-04-01",
    }
    assert parse_auto(body, content_type="application/x-www-form-urlencoded") == parsed
    # No content type: sniffed as form encoding (it does not start with { or [).
    assert parse_auto(body) == parsed


# -- csv -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "options", "expected"),
    [
        (b"a,b\n1,2\n3,4\n", None, [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]),
        (b'a,b\n"x, y",2\n', None, [{"a": "x, y", "b": "2"}]),
        (b'a,b\n"say ""hi""",2\n', None, [{"a": 'say "hi"', "b": "2"}]),
        (b'a,b\n"two\nlines",2\n', None, [{"a": "two\nlines", "b": "2"}]),
        (b"a;b\n1;2\n", {"delimiter": ";"}, [{"a": "1", "b": "2"}]),
        (b"a\tb\n1\t2\n", {"delimiter": "\t"}, [{"a": "1", "b": "2"}]),
        (b"a,b\r\n1,2\r\n", None, [{"a": "1", "b": "2"}]),
        (b"\xef\xbb\xbfa,b\n1,2\n", None, [{"a": "1", "b": "2"}]),
        (b"a,b\n", None, []),
        (b"a,b\n1,2\n\n3,4\n", None, [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]),
    ],
    ids=["header-row", "quoted-comma", "escaped-quote", "quoted-newline", "semicolon", "tab", "crlf", "bom",
         "header-only", "blank-line-skipped"],
)
def test_csv(body: bytes, options: dict[str, Any] | None, expected: list[dict[str, str]]) -> None:
    assert parse_csv(body, options=options) == expected


def test_csv_extra_fields() -> None:
    with pytest.raises(ValueError, match=r"CSV line 3 has more fields than the header"):
        parse_csv(b"a,b\n1,2\n3,4,5\n")


@pytest.mark.parametrize("body", [b"", b"\n\n"], ids=["empty", "blank-lines"])
def test_csv_without_header(body: bytes) -> None:
    with pytest.raises(ValueError, match="no header row"):
        parse_csv(body)


def test_csv_malformed_quoting() -> None:
    with pytest.raises(ValueError, match=r"invalid CSV at line \d+"):
        parse_csv(b'a,b\n1,2\n3,"x"y\n')


@pytest.mark.parametrize(
    ("body", "line"),
    [(b'a,b\n1,2\n3,"x"y\n', 3), (b'a,b\n1,2\n3,4\n"open,1\n', 4)],
    ids=["quote-then-char", "unterminated-quote"],
)
def test_csv_error_names_the_failing_line(body: bytes, line: int) -> None:
    with pytest.raises(ValueError, match=rf"invalid CSV at line {line}:"):
        parse_csv(body)


def test_csv_non_utf8() -> None:
    with pytest.raises(ValueError, match="not valid utf-8"):
        parse_csv(b"a,b\n\xff,2\n")


# -- auto ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"a": 1}', {"a": 1}),
        ("application/json; charset=utf-8", b'{"a": 1}', {"a": 1}),
        ("Application/JSON", b'{"a": 1}', {"a": 1}),
        ("text/json", b"[1]", [1]),
        ("application/vnd.x+json", b'{"a": 1}', {"a": 1}),
        ("application/problem+json; charset=utf-8", b'{"a": 1}', {"a": 1}),
        ("application/x-ndjson", b'{"a": 1}\n{"a": 2}\n', [{"a": 1}, {"a": 2}]),
        ("application/jsonl", b"1\n2", [1, 2]),
        ("application/x-jsonlines", b"1\n2", [1, 2]),
        ("text/csv", b"a,b\n1,2\n", [{"a": "1", "b": "2"}]),
        ("text/csv; charset=utf-8", b"a,b\n1,2\n", [{"a": "1", "b": "2"}]),
        ("application/csv", b"a\n1\n", [{"a": "1"}]),
        ("application/x-www-form-urlencoded", b"a=1&b=2", {"a": "1", "b": "2"}),
        ("application/x-www-form-urlencoded; charset=UTF-8", b"a=%C3%A9", {"a": "\u00e9"}),
    ],
    ids=["json", "json-charset", "json-case", "text-json", "vnd-plus-json", "problem-plus-json-charset", "x-ndjson",
         "jsonl", "x-jsonlines", "csv", "csv-charset", "application-csv", "form", "form-charset"],
)
def test_auto_by_content_type(content_type: str, body: bytes, expected: Any) -> None:
    assert parse_auto(body, content_type=content_type) == expected


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (None, b'{"a": 1}', {"a": 1}),
        (None, b"  \n[1, 2]", [1, 2]),
        (None, b"a=1&b=2", {"a": "1", "b": "2"}),
        ("", b'{"a": 1}', {"a": 1}),
        ("text/plain", b'{"a": 1}', {"a": 1}),
        ("application/octet-stream", b"a=1", {"a": "1"}),
    ],
    ids=["none-object", "none-array-after-whitespace", "none-form", "empty-type", "text-plain", "octet-stream"],
)
def test_auto_sniffs_without_a_useful_content_type(content_type: str | None, body: bytes, expected: Any) -> None:
    assert parse_auto(body, content_type=content_type) == expected


@pytest.mark.parametrize(
    "content_type",
    ["application/xml", "text/html; charset=utf-8", "multipart/mixed; boundary=x"],
    ids=["xml", "html", "multipart-mixed"],
)
def test_auto_unsupported_content_type(content_type: str) -> None:
    mime = content_type.split(";")[0]
    with pytest.raises(ValueError, match=f"cannot parse content type '{mime}'"):
        parse_auto(b"<a/>", content_type=content_type)


def test_auto_passes_options_on() -> None:
    assert parse_auto(b"a;b\n1;2\n", content_type="text/csv", options={"delimiter": ";"}) == [{"a": "1", "b": "2"}]
    assert parse_auto(b"a=1&a=2", options={"multi": "last"}) == {"a": "2"}


def test_auto_propagates_parser_errors() -> None:
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_auto(b"{nope", content_type="application/json")


# -- registration ----------------------------------------------------------------------


def test_builtin_parsers_are_registered() -> None:
    registered: dict[str, Any] = {}

    def register(name: str, parser: Any, description: str = "") -> None:
        assert name not in registered, f"{name} registered twice"
        registered[name] = parser

    parsers.odpmap_register_parsers(register)
    assert registered == {
        "auto": parse_auto, "json": parse_json, "jsonl": parse_jsonl, "form": parse_form, "query": parse_form,
        "csv": parse_csv, "multipart": parsers.parse_multipart,
    }


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]], boundary: str = "XyZb0und") -> bytes:
    out = b""
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for name, (filename, data) in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_multipart_form_data_fields_and_files() -> None:
    from odpmap.builtins.parsers import parse_auto, parse_multipart

    body = _multipart({"event": "delivered", "recipient": "a@example.com", "tag": "x"},
                      {"attachment-1": ("note.txt", b"\x00\x01binary")})
    ctype = "multipart/form-data; boundary=XyZb0und"
    parsed = parse_multipart(body, content_type=ctype)
    assert parsed["event"] == "delivered" and parsed["recipient"] == "a@example.com"
    assert parsed["attachment-1"] == {"filename": "note.txt", "content_type": "application/octet-stream", "size": 8}
    assert parse_auto(body, content_type=ctype) == parsed


def test_multipart_without_boundary_or_broken_is_a_value_error() -> None:
    from odpmap.builtins.parsers import parse_multipart

    with pytest.raises(ValueError, match="boundary"):
        parse_multipart(b"--x--", content_type="multipart/form-data")
    with pytest.raises(ValueError):
        parse_multipart(b"not multipart at all", content_type="multipart/form-data; boundary=abc")
