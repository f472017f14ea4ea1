"""odpmap provider for Twilio Programmable Messaging (SMS, MMS, WhatsApp).

Registers the ``twilio`` provider: its mapping (``twilio.yaml``) and sample reports,
through odpmap's plugin hooks. Everything else is built in: the form and JSON parsers,
the filters, and the ``twilio`` signature scheme (``X-Twilio-Signature``, HMAC-SHA1 over
the URL and the sorted POST parameters).

It also registers a puller for ``odpmap pull --provider twilio``, which lists the
account's messages with their current status (:mod:`odpmap_twilio.pull`).
"""

from __future__ import annotations

from importlib.resources import files

from odpmap import Provider, hookimpl

__all__ = ["odpmap_register_providers", "odpmap_register_pullers"]


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "twilio.yaml", samples=here / "samples"))


@hookimpl
def odpmap_register_pullers(register):  # type: ignore[no-untyped-def]
    from .pull import twilio_puller

    register("twilio", twilio_puller, description="Twilio Messages list (GET /2010-04-01/Accounts/<sid>/Messages.json)")
