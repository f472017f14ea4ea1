"""Built-in report parsers: ``json``, ``jsonl``, ``form``, ``query``, ``csv`` and ``auto``.

A parser turns the raw bytes of a report into Python data; the mapping's ``items:``
then says where the items are. Parsers raise :class:`ValueError` on a body they cannot
read, which becomes an ``unparseable`` dead letter holding the raw body.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from ..hookspecs import hookimpl
from ..registry import Register

__all__ = ["multipart_fields", "parse_auto", "parse_csv", "parse_form", "parse_json", "parse_jsonl", "parse_multipart"]


def _text(body: bytes, options: Mapping[str, Any]) -> str:
    encoding = options.get("encoding", "utf-8")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"body is not valid {encoding}: {exc}") from None
    return text[1:] if text.startswith("\ufeff") else text


def parse_json(body: bytes, *, content_type: str | None = None, headers: Mapping[str, str] | None = None,
               options: Mapping[str, Any] | None = None) -> Any:
    """One JSON document (an object, or an array of items)."""
    text = _text(body, options or {})
    if not text.strip():
        raise ValueError("empty body")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def parse_jsonl(body: bytes, *, content_type: str | None = None, headers: Mapping[str, str] | None = None,
                options: Mapping[str, Any] | None = None) -> list[Any]:
    """JSON lines: one document per non-blank line; the report is the list of them."""
    out = []
    for n, line in enumerate(_text(body, options or {}).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON on line {n}: {exc.msg}") from None
    return out


def _pairs_to_dict(pairs: list[tuple[str, Any]], multi: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            if multi == "first":
                continue
            if multi == "last":
                out[key] = value
                continue
            if not isinstance(out[key], list):
                out[key] = [out[key]]
            out[key].append(value)
        else:
            out[key] = value
    return out


def parse_form(body: bytes, *, content_type: str | None = None, headers: Mapping[str, str] | None = None,
               options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``application/x-www-form-urlencoded`` (also a GET query string).

    A repeated key becomes a list (option ``multi: list``, the default), or keeps its
    ``first``/``last`` value.
    """
    options = options or {}
    text = _text(body, options).strip()
    if text.startswith("?"):
        text = text[1:]
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError as exc:
        raise ValueError(f"invalid form encoding: {exc}") from None
    return _pairs_to_dict(pairs, options.get("multi", "list"))


def parse_csv(body: bytes, *, content_type: str | None = None, headers: Mapping[str, str] | None = None,
              options: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """CSV with a header row: a list of dicts, one per row. Options: ``delimiter``."""
    options = options or {}
    text = _text(body, options)
    delimiter = options.get("delimiter", ",")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    if not reader.fieldnames:
        raise ValueError("CSV has no header row")
    rows = []
    try:
        for row in reader:
            if None in row:
                raise ValueError(f"CSV line {reader.line_num} has more fields than the header")
            rows.append(row)
    except csv.Error as exc:
        # line_num of the underlying reader counts the line that failed.
        raise ValueError(f"invalid CSV at line {reader.reader.line_num}: {exc}") from None
    return rows


def parse_multipart(body: bytes, *, content_type: str | None = None, headers: Mapping[str, str] | None = None,
                    options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``multipart/form-data`` (e.g. Mailgun's legacy webhooks with attachments).

    Text fields become strings (a repeated name a list); file parts are described as
    ``{"filename", "content_type", "size"}`` without their content.
    """
    return multipart_fields(body, content_type)


def multipart_fields(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The fields of a ``multipart/form-data`` body (see :func:`parse_multipart`)."""
    import email.parser
    import email.policy

    if not content_type or not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("multipart body needs a multipart/form-data content type with a boundary")
    head = f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise ValueError(f"invalid multipart body: {', '.join(type(d).__name__ for d in message.defects) or 'no parts'}")
    pairs: list[tuple[str, Any]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise ValueError("a multipart part has no name")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            pairs.append((name, {"filename": filename, "content_type": part.get_content_type(), "size": len(payload)}))
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            pairs.append((name, payload.decode(charset)))
        except (LookupError, UnicodeDecodeError) as exc:
            raise ValueError(f"multipart field {name!r} is not valid {charset}: {exc}") from None
    return _pairs_to_dict(pairs, "list")  # type: ignore[arg-type]


_BY_CONTENT_TYPE = {
    "application/json": parse_json,
    "text/json": parse_json,
    "application/x-ndjson": parse_jsonl,
    "application/jsonl": parse_jsonl,
    "application/x-jsonlines": parse_jsonl,
    "application/x-www-form-urlencoded": parse_form,
    "multipart/form-data": parse_multipart,
    "text/csv": parse_csv,
    "application/csv": parse_csv,
}


def parse_auto(body: bytes, *, content_type: str | None = None, headers: Mapping[str, str] | None = None,
               options: Mapping[str, Any] | None = None) -> Any:
    """Pick a parser by content type (``+json`` suffixes count as JSON); without one,
    JSON if the body starts with ``{`` or ``[``, else form encoding."""
    mime = (content_type or "").split(";")[0].strip().lower()
    parser = _BY_CONTENT_TYPE.get(mime)
    if parser is None and mime.endswith("+json"):
        parser = parse_json
    if parser is None:
        if mime and mime not in ("text/plain", "application/octet-stream"):
            raise ValueError(f"cannot parse content type {mime!r}")
        head = body.lstrip()[:1]
        parser = parse_json if head in (b"{", b"[") else parse_form
    return parser(body, content_type=content_type, headers=headers, options=options)


@hookimpl
def odpmap_register_parsers(register: Register) -> None:
    register("auto", parse_auto)
    register("json", parse_json)
    register("jsonl", parse_jsonl)
    register("form", parse_form)
    register("query", parse_form)
    register("csv", parse_csv)
    register("multipart", parse_multipart)
