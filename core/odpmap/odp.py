"""The ODP events API sink: ``POST {base}/events`` with retries and per-event rejections.

:class:`OdpSink` implements :class:`odpmap.sinks.Sink` for the Optimizely Data Platform
REST API (``/v3/events``):

* **Batching.** A :meth:`~OdpSink.send` call is split into requests of at most
  ``batch_size`` events (default 100, like the official SDK; the API allows 500) whose JSON
  body stays under ``max_bytes``. An event too big for a request on its own is rejected.
* **Region.** The base URL comes from the API key, with the rule of the official Node SDK
  ``@zaiusinc/node-sdk`` (``src/Api/config/configure.ts``, ``getApiBasePath``): drop the
  private part after the last ``.``, then a key ending in ``-eu1`` goes to
  ``https://api.eu1.odp.optimizely.com/v3``, ``-au1`` to
  ``https://api.au1.odp.optimizely.com/v3``, anything else to ``https://api.zaius.com/v3``.
  ``base_url`` overrides it.
* **Retries.** Network errors, timeouts, ``408``, ``429`` and ``5xx`` are retried up to
  ``max_retries`` times with exponential backoff and full jitter, honouring ``Retry-After``
  (seconds or an HTTP date), every wait capped at ``backoff_max``. Then
  :class:`~odpmap.errors.DispatchError` with ``retryable=True``.
* **Rejections.** A ``400`` naming ``detail.invalids`` rejects those events (returned in
  :attr:`SendReport.rejected <odpmap.sinks.SendReport.rejected>`) and resends the rest; a
  ``400`` without usable invalids rejects the whole request. ``401``/``403`` (wrong key),
  ``404`` (wrong URL) and other ``4xx`` raise ``DispatchError(retryable=False)``.
* **Idempotence.** Every event carries ``data.idempotence_id``; :func:`ensure_idempotence_id`
  sets one only where it is missing, so an id assigned when the event was stored survives
  retries and restarts (ODP sees the same id for a resent event).

.. versionadded:: 0.1
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from odpmap.errors import DispatchError
from odpmap.sinks import SendReport

__all__ = [
    "AU1_BASE_URL",
    "DEFAULT_BASE_URL",
    "EU1_BASE_URL",
    "MAX_BATCH_SIZE",
    "OdpSink",
    "base_url_for_api_key",
    "ensure_idempotence_id",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

#: The base URL for keys without a region suffix (legacy US).
DEFAULT_BASE_URL = "https://api.zaius.com/v3"
#: The base URL for keys whose public part ends in ``-eu1``.
EU1_BASE_URL = "https://api.eu1.odp.optimizely.com/v3"
#: The base URL for keys whose public part ends in ``-au1``.
AU1_BASE_URL = "https://api.au1.odp.optimizely.com/v3"
#: The most events the events API takes in one request.
MAX_BATCH_SIZE = 500

_RETRY_STATUSES = frozenset({408, 429})


def base_url_for_api_key(api_key: str) -> str:
    """The events API base URL for ``api_key``, with the official Node SDK's rule.

    A private key has the form ``<public>.<secret>``: the region suffix is read from the part
    before the last ``.``.

    >>> base_url_for_api_key("W4WzcEs-ABgXorzY7h1LCQ-eu1")
    'https://api.eu1.odp.optimizely.com/v3'
    >>> base_url_for_api_key("abc-au1.secret")
    'https://api.au1.odp.optimizely.com/v3'
    >>> base_url_for_api_key("abc.secret-eu1")
    'https://api.zaius.com/v3'
    """
    public = api_key.rpartition(".")[0] if "." in api_key else api_key
    if public.endswith("-eu1"):
        return EU1_BASE_URL
    if public.endswith("-au1"):
        return AU1_BASE_URL
    return DEFAULT_BASE_URL


def ensure_idempotence_id(event: dict[str, Any]) -> dict[str, Any]:
    """Give ``event`` a ``data.idempotence_id`` (a new uuid4) unless it has one; return it.

    The event is changed in place (``data`` is created when absent). An existing non-empty
    id is never replaced: it must stay the same across retries so ODP can recognise a resend.

    :raises TypeError: when ``event["data"]`` exists and is not a mapping
    """
    data = event.setdefault("data", {})
    if not isinstance(data, dict):
        raise TypeError(f"event 'data' must be an object, not {type(data).__name__}")
    if data.get("idempotence_id") in (None, ""):
        data["idempotence_id"] = str(uuid.uuid4())
    return event


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or ``None`` when unusable.

    Accepts delta-seconds (``"120"``, also ``"1.5"``) and an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``); a date in the past gives ``0.0``.

    :param now: the current Unix time, for the HTTP-date form (default :func:`time.time`)
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class OdpSink:
    """Sends batches of ODP events to the events API; see the module docstring.

    :param api_key: the ODP API key (public tracker id, or private ``public.secret`` key)
    :param base_url: the API base, e.g. ``https://api.eu1.odp.optimizely.com/v3``; default
        from the key's region (:func:`base_url_for_api_key`)
    :param batch_size: most events per request, 1..500
    :param max_bytes: most bytes of a request's JSON body; requests are cut to stay under it
    :param timeout: seconds for connect, read, write and pool waits of one request
    :param max_retries: retries after the first attempt of a request (so up to
        ``max_retries + 1`` attempts) before :class:`~odpmap.errors.DispatchError`
    :param backoff_base: the cap of the first backoff wait; it doubles on each retry
    :param backoff_max: the largest wait, also the cap of a ``Retry-After``
    :param sleep: how to wait (injectable for tests)
    :param transport: an httpx transport (e.g. :class:`httpx.MockTransport`) instead of the
        network
    :param rng: the random source of the jitter (injectable for tests)

    The sink holds one :class:`httpx.Client`, so connections are reused; call :meth:`close`
    (or use it as a context manager) when done. ``stats`` counts ``requests`` (HTTP attempts),
    ``retries``, ``sent`` and ``rejected`` events since creation; it is updated without a
    lock, so give each sending thread its own sink when the figures must be exact.
    """

    name = "odp"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        batch_size: int = 100,
        max_bytes: int = 1_000_000,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, not {batch_size}")
        if max_bytes < 64:
            raise ValueError(f"max_bytes must be at least 64, not {max_bytes}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        if timeout <= 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("timeout must be > 0; backoff_base and backoff_max must be >= 0")
        self.base_url = (base_url or base_url_for_api_key(api_key)).rstrip("/")
        parsed = httpx.URL(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"base_url must be an http(s) URL with a host, not {self.base_url!r}")
        self.url = f"{self.base_url}/events"
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={"x-api-key": api_key, "Content-Type": "application/json"},
        )
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "sent": 0, "rejected": 0}

    def __enter__(self) -> OdpSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client and its connections."""
        self._client.close()

    def send(self, events: Sequence[dict[str, Any]]) -> SendReport:
        """Send ``events``; return how many ODP accepted and which it rejected.

        Events lacking ``data.idempotence_id`` get one (in place). ``rejected`` holds
        ``(index in events, message)``.

        :raises DispatchError: ``retryable=True`` when retries ran out (network, timeouts,
            429, 5xx), ``retryable=False`` for a wrong key (401/403), a wrong URL (404) or
            another client error. Requests of this call sent before the failure may have
            been accepted; resending them is safe because their idempotence ids stay.
        """
        for event in events:
            ensure_idempotence_id(event)
        report = SendReport(sent=0)
        batches, too_big = self._split(events)
        for index, size in too_big:
            report.rejected.append(
                (index, f"event is {size} bytes encoded, over the request cap of {self.max_bytes}")
            )
        for batch in batches:
            self._send_batch(events, batch, report)
        report.rejected.sort()
        self.stats["sent"] += report.sent
        self.stats["rejected"] += len(report.rejected)
        return report

    def _split(
        self, events: Sequence[dict[str, Any]]
    ) -> tuple[list[list[int]], list[tuple[int, int]]]:
        """Cut ``events`` into index lists within ``batch_size`` and ``max_bytes``.

        Returns the batches and ``(index, encoded size)`` of events too big for any request.
        """
        batches: list[list[int]] = []
        too_big: list[tuple[int, int]] = []
        current: list[int] = []
        current_bytes = 2  # "[" and "]"
        for index, event in enumerate(events):
            size = len(_encode(event))
            if size + 2 > self.max_bytes:
                too_big.append((index, size))
                continue
            extra = size + (1 if current else 0)  # the separating comma
            if current and (
                len(current) >= self.batch_size or current_bytes + extra > self.max_bytes
            ):
                batches.append(current)
                current, current_bytes, extra = [], 2, size
            current.append(index)
            current_bytes += extra
        if current:
            batches.append(current)
        return batches, too_big

    def _send_batch(
        self, events: Sequence[dict[str, Any]], batch: list[int], report: SendReport
    ) -> None:
        """Post one batch (indexes into ``events``); on 400 invalids, resend the rest."""
        while batch:
            response = self._post([events[i] for i in batch])
            if response.status_code < 300:
                report.sent += len(batch)
                return
            invalid = self._invalids(response, len(batch))
            if not invalid:
                message = f"ODP refused the whole request (400): {_describe(response)}"
                report.rejected.extend((i, message) for i in batch)
                return
            for position, message in sorted(invalid.items()):
                report.rejected.append((batch[position], f"ODP rejected the event: {message}"))
            batch = [i for position, i in enumerate(batch) if position not in invalid]
            log.info("ODP rejected %d event(s); resending the other %d", len(invalid), len(batch))

    def _post(self, payload: list[dict[str, Any]]) -> httpx.Response:
        """POST ``payload`` with retries; return a 2xx or 400 response, raise otherwise."""
        body = _encode(payload)
        attempt = 0
        while True:
            self.stats["requests"] += 1
            retry_after: float | None = None
            try:
                response = self._client.post(self.url, content=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {str(exc) or 'no detail'}"
            else:
                status = response.status_code
                if status < 300 or status == 400:
                    return response
                if status in (401, 403):
                    raise DispatchError(
                        f"{status} from {self.url}: the ODP API key is wrong or lacks "
                        f"permission to send events (check the key, and that the base URL is "
                        f"the account's region); ODP said: {_describe(response)}",
                        sink=self.name,
                        retryable=False,
                    )
                if status == 404:
                    raise DispatchError(
                        f"404 Not Found for {self.url}: check base_url (the events endpoint is "
                        f"{{base}}/events, base like {DEFAULT_BASE_URL})",
                        sink=self.name,
                        retryable=False,
                    )
                if status not in _RETRY_STATUSES and status < 500:
                    raise DispatchError(
                        f"{status} from {self.url}: {_describe(response)}",
                        sink=self.name,
                        retryable=False,
                    )
                problem = f"HTTP {status}: {_describe(response)}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt >= self.max_retries:
                raise DispatchError(
                    f"gave up on {self.url} after {attempt + 1} attempt(s); last: {problem}",
                    sink=self.name,
                    retryable=True,
                )
            delay = self._backoff(attempt, retry_after)
            log.warning("ODP request failed (%s); retry %d in %.2fs", problem, attempt + 1, delay)
            self.stats["retries"] += 1
            self._sleep(delay)
            attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry ``attempt + 1``: ``Retry-After`` if given, else full jitter."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        cap = min(self.backoff_max, self.backoff_base * 2.0 ** min(attempt, 64))
        return self._rng.uniform(0.0, cap)

    @staticmethod
    def _invalids(response: httpx.Response, count: int) -> dict[int, str]:
        """``{position in batch: message}`` from a 400's ``detail.invalids`` (in range only)."""
        try:
            invalids = response.json()["detail"]["invalids"]
        except (ValueError, KeyError, TypeError):
            return {}
        found: dict[int, str] = {}
        if not isinstance(invalids, list):
            return found
        for entry in invalids:
            if not isinstance(entry, dict):
                continue
            position = entry.get("event")
            if (
                isinstance(position, int)
                and not isinstance(position, bool)
                and 0 <= position < count
            ):
                message = str(entry.get("message") or "invalid event")
                found[position] = f"{found[position]}; {message}" if position in found else message
        return found


def _describe(response: httpx.Response) -> str:
    """A short text for an error response: its JSON ``detail``/``message`` or body text."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        for key in ("detail", "message", "title"):
            if payload.get(key):
                text = payload[key] if isinstance(payload[key], str) else json.dumps(payload[key])
                return text[:500]
    return response.text[:500] or response.reason_phrase
