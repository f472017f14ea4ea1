"""odpmap provider for Brevo (formerly Sendinblue) email webhooks.

Registers the ``brevo`` provider: its mapping (``brevo.yaml``) and sample reports. Brevo
does not sign its webhooks; the mapping names the ``brevo`` scheme (``Authorization:
Bearer <token>``, built into odpmap). See the README for basic auth.

It also adds one filter, ``brevo_custom``, because the mapping language cannot express
it: Brevo echoes the ``X-Mailin-custom`` header set at send time back verbatim, as one
string. Senders put either a JSON object in it (the django-anymail convention) or
Brevo's own documented ``key:value|key:value`` pairs. Turning the second form into a
mapping needs a loop that builds a dict, which Jinja's immutable sandbox has no way to
do (no comprehensions, no mutation); ``from_json`` only covers the first form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources import files
from typing import Any

import jinja2

from odpmap import Provider, hookimpl

__all__ = ["brevo_custom", "odpmap_prepare_jinja_environment", "odpmap_register_providers"]

#: Longest ``X-Mailin-custom`` value read (a mail header; anything longer is not ours).
MAX_CUSTOM_LENGTH = 10_000


def brevo_custom(value: Any) -> dict[str, Any]:
    """The ``X-Mailin-custom`` string of a Brevo webhook event -> a dict of its fields.

    * a JSON object (``{"odp_campaign_id": 42}``) -> that object;
    * ``key:value|key:value`` pairs (Brevo's documented example format) -> ``{key: value}``,
      split on the first ``:`` of each ``|``-separated part, keys and values trimmed;
    * anything else (missing, ``null``, an opaque string such as ``some_custom_header``,
      JSON that is not an object, malformed JSON) -> ``{}``: the header is free-form, so
      a value that carries no fields is not an error.
    """
    if isinstance(value, jinja2.Undefined) or value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        return {}
    text = value.strip()
    if not text or len(text) > MAX_CUSTOM_LENGTH:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    out: dict[str, Any] = {}
    for part in text.split("|"):
        key, sep, val = part.partition(":")
        key = key.strip()
        if sep and key:
            out[key] = val.strip()
    return out


@hookimpl
def odpmap_prepare_jinja_environment(env: jinja2.Environment) -> None:
    env.filters["brevo_custom"] = brevo_custom


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "brevo.yaml", samples=here / "samples"))
