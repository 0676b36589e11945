"""Check that a callback comes from the service: its Standard Webhooks signature.

With ``webhook_secret`` set, the service signs each callback (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``); a receiver verifies the headers against the
raw body bytes, before parsing them, with the same secret. The signing itself is the
service's own (:mod:`primaa.webhooks.signing`), so both ends compute one thing.
"""

from __future__ import annotations

import binascii
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from primaa.webhooks.signing import decode_secret, sign

__all__ = ["InvalidSignature", "verify_webhook"]

#: How far (seconds) a callback's timestamp may be from now: older ones may be replays.
DEFAULT_TOLERANCE = 300


class InvalidSignature(ValueError):
    """The callback is not signed with this secret, was altered, or is too old or new."""


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Any:
    """Verify a callback and return its body parsed as JSON; raise :class:`InvalidSignature`.

    ``secret`` is the service's ``webhook_secret`` (``whsec_...``) or its decoded bytes;
    ``body`` the bytes as received (parsed and re-serialised JSON would not match).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (message_id and stamp and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature(f"webhook-timestamp {stamp!r} is not a Unix time") from None
    skew = (time.time() if now is None else now) - timestamp
    if abs(skew) > tolerance:
        when = "old" if skew > 0 else "far in the future"
        raise InvalidSignature(f"timestamp {timestamp} is too {when} ({abs(skew):.0f} s)")
    try:
        key = decode_secret(secret) if isinstance(secret, str) else secret
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"not a webhook secret: {exc}") from None
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(key, message_id, timestamp, raw)
    # Several signatures may be sent (e.g. while a secret is rotated): one must match.
    if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
        raise InvalidSignature("no signature matches this secret and body")
    return json.loads(raw)
