"""odpmap provider for Twilio Programmable Messaging (SMS, MMS, WhatsApp).

Registers the ``twilio`` provider: its mapping (``twilio.yaml``) and sample reports,
through odpmap's plugin hooks. Everything else is built in: the form and JSON parsers,
the filters, and the ``twilio`` signature scheme (``X-Twilio-Signature``, HMAC-SHA1 over
the URL and the sorted POST parameters).
"""

from __future__ import annotations

from importlib.resources import files

from odpmap import Provider, hookimpl

__all__ = ["odpmap_register_providers"]


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "twilio.yaml", samples=here / "samples"))
