"""odpmap provider for the SendGrid Event Webhook.

Registers the ``sendgrid`` provider: its mapping (``sendgrid.yaml``), sample reports,
and the ``sendgrid`` signature scheme (ECDSA P-256 over timestamp + body), all through
odpmap's plugin hooks.
"""

from __future__ import annotations

from importlib.resources import files

from odpmap import Provider, hookimpl

__all__ = ["odpmap_register_providers"]


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "sendgrid.yaml", samples=here / "samples"))
