"""Who is calling: wallet sign-in, passwords, access and refresh tokens, API keys, roles.

The pure parts (message format, signature checks, token encoding, key format)
are apart from the stores (Redis nonces, PostgreSQL users, sessions and keys),
so each can be tested on its own. :mod:`.account_links` keeps the single-use links
mailed for email verification and password reset, and :mod:`.mail` sends them (SMTP,
or the log in development). :mod:`gridclear.cloud.api` puts them together.
"""

from gridclear.cloud.identity.roles import Role, Scope

__all__ = ["Role", "Scope"]
