"""The REST API: ``create_app(settings)`` builds it (see :mod:`gridclear.cloud.api.app`).

Layers: ``settings`` in, ``services`` (pool, Redis, stores, limiter, metrics) built by
the lifespan, ``deps`` for identity, roles, scopes and rate limits, ``envelope`` and
``errors`` for every answer's shape, ``middleware`` for request ids, logs, metrics,
headers and the body limit, ``routes/`` one module per area.
"""

from gridclear.cloud.api.app import create_app, create_app_from_env

__all__ = ["create_app", "create_app_from_env"]
