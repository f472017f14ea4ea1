"""odpmap provider for Mailgun webhooks.

Registers the ``mailgun`` provider: its mapping (``mailgun.yaml``) and sample reports,
through odpmap's plugin hooks. The mapping reads the current JSON webhooks
(``{"signature": {...}, "event-data": {...}}``), pages of the Events API
(``{"items": [...], "paging": {...}}``) and the deprecated form-encoded ("legacy")
webhooks. Signatures use odpmap's built-in ``mailgun`` scheme (HMAC-SHA256 of
timestamp + token with the HTTP webhook signing key). No custom code is needed to map.

It also registers a puller for ``odpmap pull --provider mailgun``, which reads the Events
API page by page (:mod:`odpmap_mailgun.pull`).
"""

from __future__ import annotations

from importlib.resources import files

from odpmap import Provider, hookimpl

__all__ = ["odpmap_register_providers", "odpmap_register_pullers"]


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "mailgun.yaml", samples=here / "samples"))


@hookimpl
def odpmap_register_pullers(register):  # type: ignore[no-untyped-def]
    from .pull import mailgun_puller

    register("mailgun", mailgun_puller, description="Mailgun Events API (GET /v3/<domain>/events)")
