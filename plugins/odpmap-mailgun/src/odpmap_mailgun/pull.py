"""Pulling Mailgun events: the Events API (``GET /v3/<domain>/events``), page by page.

``odpmap pull --provider mailgun`` with ``ODPMAP_MAILGUN_API_KEY`` and
``ODPMAP_MAILGUN_DOMAIN`` (``ODPMAP_MAILGUN_BASE_URL`` for the EU region:
``https://api.eu.mailgun.net/v3``).

One run asks for the events from ``begin`` to ``end`` in ascending order, 300 a page, and
follows each page's ``paging.next`` URL until a page has no items (Mailgun always gives a
``next`` URL; the one after the last page answers an empty page).

* ``begin``: the cursor, else ``since``, else one day ago.
* ``end``: ``until``, else now minus ``settle`` (30 minutes). Mailgun's event storage is
  eventually consistent: an event may show up in the API some time after it happened, and
  Mailgun's polling guidance is to read only events older than about half an hour. Events
  younger than that are left for the next run.
* The cursor is the time of the newest event stored, ``{"begin": <epoch seconds>}``, not a
  ``next`` URL: a ``next`` URL carries the run's ``end``, so polling it later would never
  reach newer events. The next run starts at that second again (Mailgun takes whole
  seconds), so the events of that second come twice: they have the same Mailgun event id,
  hence the same idempotence id, and the outbox keeps one.
* A ``next`` URL on another host than the base URL is refused: the API key goes only
  to the base URL's host.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from odpmap.errors import ConfigError
from odpmap.pull import JsonApi, Page, PullError, parse_time

__all__ = ["DEFAULT_BASE_URL", "EU_BASE_URL", "MailgunPuller", "mailgun_puller"]

#: The API base of Mailgun's US region.
DEFAULT_BASE_URL = "https://api.mailgun.net/v3"
#: The API base of Mailgun's EU region.
EU_BASE_URL = "https://api.eu.mailgun.net/v3"
#: Mailgun's largest page.
MAX_LIMIT = 300


class MailgunPuller:
    """Reads a sending domain's events from the Mailgun Events API; see the module docstring.

    :param api_key: the Mailgun private API key (basic auth ``api:<key>``)
    :param domain: the sending domain (``mg.example.com``)
    :param base_url: the API base, ``https://api.mailgun.net/v3`` (US) or
        ``https://api.eu.mailgun.net/v3`` (EU)
    :param since: epoch seconds to start from when there is no cursor (default: a day ago)
    :param until: epoch seconds to stop at (default: now minus ``settle``)
    :param settle: seconds to leave Mailgun for its events to settle (default 1800)
    :param limit: events per page, at most 300
    :param lookback: the default start without cursor nor ``since``, in seconds before now
    """

    def __init__(
        self,
        *,
        api_key: str,
        domain: str,
        base_url: str = DEFAULT_BASE_URL,
        since: float | None = None,
        until: float | None = None,
        settle: float = 1800.0,
        limit: int = MAX_LIMIT,
        lookback: float = 86400.0,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if not api_key:
            raise ConfigError("mailgun puller: the API key is empty")
        domain = domain.strip()
        if not domain or "/" in domain or "?" in domain:
            raise ConfigError(f"mailgun puller: {domain!r} is not a sending domain")
        if not 1 <= limit <= MAX_LIMIT:
            raise ConfigError(f"mailgun puller: limit must be 1 to {MAX_LIMIT}, not {limit}")
        self.api_key = api_key
        self.domain = domain
        if not base_url.startswith(("https://", "http://")):
            raise ConfigError(f"mailgun puller: the base URL must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.since = since
        self.until = until
        self.settle = settle
        self.limit = limit
        self.lookback = lookback
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.clock = clock
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"MailgunPuller(domain={self.domain!r}, base_url={self.base_url!r})"

    def window(self, cursor: str | None) -> tuple[float, float]:
        """``(begin, end)`` of a run from ``cursor``."""
        now = self.clock()
        if cursor:
            try:
                begin = float(json.loads(cursor)["begin"])
            except (ValueError, KeyError, TypeError):
                raise PullError(f"mailgun: unreadable cursor {cursor!r} (pull with --reset)", retryable=False) from None
        elif self.since is not None:
            begin = float(self.since)
        else:
            begin = now - self.lookback
        end = float(self.until) if self.until is not None else now - self.settle
        return begin, end

    def pull(self, cursor: str | None) -> Iterator[Page]:
        begin, end = self.window(cursor)
        if math.floor(begin) >= math.floor(end):
            return
        newest = begin
        with JsonApi(
            self.base_url,
            auth=("api", self.api_key),
            label="Mailgun Events API",
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            sleep=self.sleep,
        ) as api:
            url: str | None = f"{api.base_url}/{self.domain}/events"
            params: dict[str, Any] | None = {
                "begin": math.floor(begin),
                "end": math.floor(end),
                "ascending": "yes",
                "limit": self.limit,
            }
            seen: set[str] = set()
            while url is not None:
                body, page = api.get(url, params)
                if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                    raise PullError(f"mailgun: {url}: not an Events API page (no items list)", retryable=True)
                items = page["items"]
                if not items:
                    return
                for item in items:
                    stamp = item.get("timestamp") if isinstance(item, dict) else None
                    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
                        newest = max(newest, float(stamp))
                yield Page(body, "application/json", json.dumps({"begin": newest}), source=url)
                paging = page.get("paging")
                nxt = paging.get("next") if isinstance(paging, dict) else None
                if not isinstance(nxt, str) or not nxt:
                    return
                url = api.url(nxt)  # refuses another host
                if url in seen:
                    raise PullError(f"mailgun: the API sent the same next page twice: {url}", retryable=True)
                seen.add(url)
                params = None


def mailgun_puller(
    *,
    api_key: str,
    domain: str,
    base_url: str = DEFAULT_BASE_URL,
    since: str | float | None = None,
    until: str | float | None = None,
    settle: str | float = 1800,
    limit: str | int = MAX_LIMIT,
    lookback: str | float = 86400,
    max_retries: str | int = 4,
) -> MailgunPuller:
    """The factory registered for ``mailgun`` (options may be strings from the environment)."""
    try:
        return MailgunPuller(
            api_key=api_key, domain=domain, base_url=base_url, since=_time(since), until=_time(until),
            settle=float(settle),
            limit=int(limit), lookback=float(lookback), max_retries=int(max_retries),
        )
    except ValueError as exc:
        raise ConfigError(f"mailgun puller: {exc}") from None


def _time(value: str | float | None) -> float | None:
    return parse_time(value) if value is not None else None
