"""odpmap provider for Mandrill (Mailchimp Transactional) webhooks.

Registers the ``mandrill`` provider: its mapping (``mandrill.yaml``) and sample reports,
through odpmap's plugin hooks. The mapping needs no code: the built-in ``auto`` parser reads
the form body, the ``from_json`` filter decodes its ``mandrill_events`` field, and the core's
``mandrill`` verifier checks ``X-Mandrill-Signature``.
"""

from __future__ import annotations

from importlib.resources import files

from odpmap import Provider, hookimpl

__all__ = ["odpmap_register_providers"]


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "mandrill.yaml", samples=here / "samples"))
