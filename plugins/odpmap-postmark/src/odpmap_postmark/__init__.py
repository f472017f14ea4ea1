"""odpmap provider for Postmark webhooks.

Registers the ``postmark`` provider: its mapping (``postmark.yaml``) and sample reports,
through odpmap's plugin hooks. The mapping reads every Postmark webhook record type
(Delivery, Bounce, SpamComplaint, Open, Click, SubscriptionChange) and the older bodies
without ``RecordType``. Postmark does not sign webhooks: requests are authenticated with
HTTP basic credentials put in the webhook URL (odpmap's built-in ``postmark`` scheme,
an alias of ``basic_auth``). No custom code is needed.
"""

from __future__ import annotations

from importlib.resources import files

from odpmap import Provider, hookimpl

__all__ = ["odpmap_register_providers"]


@hookimpl
def odpmap_register_providers(register):  # type: ignore[no-untyped-def]
    here = files(__name__)
    register(Provider(mapping=here / "postmark.yaml", samples=here / "samples"))
