"""Built-in signature verifiers (SendGrid, Mailgun, Twilio, Mandrill, SNS, ...).

The algorithms live in :mod:`odpmap.signatures`; this plugin registers them by scheme
name so mappings can say ``verify: mailgun`` and plugins can add their own schemes.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..registry import Register


@hookimpl
def odpmap_register_verifiers(register: Register) -> None:
    from ..signatures import VERIFIERS

    for name, verify in sorted(VERIFIERS.items()):
        register(name, verify)
