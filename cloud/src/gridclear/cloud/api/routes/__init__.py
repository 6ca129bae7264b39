"""The API's routers, one module per area; :mod:`gridclear.cloud.api.app` mounts them."""

__all__: list[str] = []
