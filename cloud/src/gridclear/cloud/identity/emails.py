"""The one e-mail rule: what an account's address may look like, and its stored form.

Pure, so the API's request schemas and the command line (``admin create``)
apply the same rule without either importing the other.
"""

from __future__ import annotations

import re

__all__ = ["MAX_EMAIL_CHARS", "normalize_email"]

MAX_EMAIL_CHARS = 254
"""RFC 5321's limit on a forward path, less its angle brackets."""

# Deliverability is proven only by sending mail, which is not this service's job;
# a shape check (and lower-casing) is all that is useful here, so no extra library.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")


def normalize_email(value: str) -> str:
    """``value`` stripped and lower-cased; ``ValueError`` unless it has an address's shape.

    The shape is a local part of 1 to 64 characters, one ``@`` and a domain of
    at least two dot-separated labels, with no white space, in at most
    :data:`MAX_EMAIL_CHARS` characters. Accounts are stored and looked up in
    this form, so two spellings of one address are one account.
    """
    value = value.strip().lower()
    if len(value) > MAX_EMAIL_CHARS or not _EMAIL.match(value):
        raise ValueError("not an email address")
    return value
