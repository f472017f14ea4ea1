"""Pulling Twilio message statuses: the Messages list (``GET /2010-04-01/Accounts/<sid>/Messages.json``).

``odpmap pull --provider twilio`` with ``ODPMAP_TWILIO_ACCOUNT_SID`` and
``ODPMAP_TWILIO_AUTH_TOKEN`` (``ODPMAP_TWILIO_BASE_URL`` overrides
``https://api.twilio.com``).

The list holds each message once, with its *current* status, newest first; it cannot be
asked for "what changed since". So a run lists the messages sent since the last run's
start minus ``lookback`` (default one day: statuses change after the message was sent,
when the carrier's receipt arrives) and the mapping turns each into the event of its
status. A message seen again with the same status gives the same idempotence id (the
mapping's ``item_id`` is ``<sid>:<status>``), so the outbox keeps one event per status
change; a new status is a new event.

* The filter is ``DateSent>=YYYY-MM-DD`` (Twilio's filter is by day, UTC), pages of
  ``page_size`` messages, following ``next_page_uri`` until it is ``null``.
* The cursor while a run is under way is ``{"next": <next_page_uri>, "started": T,
  "scanned_to": ...}``: a run that stopped goes on with that page. After the last page it
  is ``{"scanned_to": T}``, ``T`` the time that run started.
* Status changes later than ``lookback`` after sending are not seen: use Twilio's status
  callbacks (the ``twilio`` webhook) for those.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from odpmap.errors import ConfigError
from odpmap.pull import JsonApi, Page, PullError, parse_time

__all__ = ["DEFAULT_BASE_URL", "TwilioPuller", "twilio_puller"]

#: Twilio's REST API base.
DEFAULT_BASE_URL = "https://api.twilio.com"
#: The most messages Twilio lists per page.
MAX_PAGE_SIZE = 1000


class TwilioPuller:
    """Reads an account's messages from Twilio's Messages list; see the module docstring.

    :param account_sid: the account SID (``AC...``), also the basic-auth user
    :param auth_token: the account's auth token
    :param base_url: the API base (``https://api.twilio.com``)
    :param since: epoch seconds to start from when there is no cursor (default: ``lookback``
        before now)
    :param lookback: seconds before the last run's start to list again (default one day)
    :param page_size: messages per page, at most 1000
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str = DEFAULT_BASE_URL,
        since: float | None = None,
        lookback: float = 86400.0,
        page_size: int = MAX_PAGE_SIZE,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        account_sid = account_sid.strip()
        if not account_sid or "/" in account_sid or "?" in account_sid:
            raise ConfigError(f"twilio puller: {account_sid!r} is not an account SID")
        if not auth_token:
            raise ConfigError("twilio puller: the auth token is empty")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ConfigError(f"twilio puller: page_size must be 1 to {MAX_PAGE_SIZE}, not {page_size}")
        self.account_sid = account_sid
        self.auth_token = auth_token
        if not base_url.startswith(("https://", "http://")):
            raise ConfigError(f"twilio puller: the base URL must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.since = since
        self.lookback = lookback
        self.page_size = page_size
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.clock = clock
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"TwilioPuller(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    @property
    def list_path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def pull(self, cursor: str | None) -> Iterator[Page]:
        try:
            state = json.loads(cursor) if cursor else {}
            if not isinstance(state, dict):
                raise ValueError
        except ValueError:
            raise PullError(f"twilio: unreadable cursor {cursor!r} (pull with --reset)", retryable=False) from None
        scanned_to = state.get("scanned_to")
        with JsonApi(
            self.base_url,
            auth=(self.account_sid, self.auth_token),
            label="Twilio Messages API",
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            sleep=self.sleep,
        ) as api:
            params: dict[str, Any] | None
            if isinstance(state.get("next"), str):  # a run that stopped: go on with its next page
                started = float(state.get("started") or self.clock())
                url = api.url(state["next"])
                params = None
            else:
                started = self.clock()
                if scanned_to is not None:
                    start = float(scanned_to) - self.lookback
                elif self.since is not None:
                    start = float(self.since)
                else:
                    start = started - self.lookback
                day = datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d")
                url = api.url(self.list_path)
                params = {"PageSize": self.page_size, "DateSent>": day}
            seen: set[str] = set()
            while True:
                body, page = api.get(url, params)
                if not isinstance(page, dict) or not isinstance(page.get("messages"), list):
                    raise PullError(f"twilio: {url}: not a Messages list page (no messages list)", retryable=True)
                nxt = page.get("next_page_uri")
                if isinstance(nxt, str) and nxt:
                    nxt_url = api.url(nxt)  # a path, or a URL on the base URL's host only
                    if nxt_url in seen:
                        raise PullError(f"twilio: the API sent the same next page twice: {nxt}", retryable=True)
                    seen.add(nxt_url)
                    resume = {"next": nxt, "started": started, "scanned_to": scanned_to}
                    yield Page(body, "application/json", json.dumps(resume), source=url)
                    url, params = nxt_url, None
                    continue
                yield Page(body, "application/json", json.dumps({"scanned_to": started}), source=url)
                return


def twilio_puller(
    *,
    account_sid: str,
    auth_token: str,
    base_url: str = DEFAULT_BASE_URL,
    since: str | float | None = None,
    lookback: str | float = 86400,
    page_size: str | int = MAX_PAGE_SIZE,
    max_retries: str | int = 4,
) -> TwilioPuller:
    """The factory registered for ``twilio`` (options may be strings from the environment)."""
    try:
        return TwilioPuller(
            account_sid=account_sid, auth_token=auth_token, base_url=base_url, since=_time(since),
            lookback=float(lookback), page_size=int(page_size), max_retries=int(max_retries),
        )
    except ValueError as exc:
        raise ConfigError(f"twilio puller: {exc}") from None


def _time(value: str | float | None) -> float | None:
    return parse_time(value) if value is not None else None
