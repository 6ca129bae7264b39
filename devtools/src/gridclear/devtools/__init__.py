"""gridclear-devtools: the workshop, apart from the product (only the dev group installs it).

- :mod:`~gridclear.devtools.localservices`: throwaway PostgreSQL, Redis, Mosquitto;
- :mod:`~gridclear.devtools.demo`: the whole system on one machine (``gridclear-dev demo``),
  with :mod:`~gridclear.devtools.participants`, its simulated traders;
- :mod:`~gridclear.devtools.metersim`: ``gridclear-metersim serve`` as a child process;
- :mod:`~gridclear.devtools.pytest_plugin`: the servers as pytest fixtures (``pytest11``);
- :mod:`~gridclear.devtools.children`, :mod:`~gridclear.devtools.net`,
  :mod:`~gridclear.devtools.waiting`, :mod:`~gridclear.devtools.mqtt`: the helpers every
  member's tests share.
"""

from importlib.metadata import version as _version
from pathlib import Path

__version__ = _version("gridclear-devtools")

REPO_ROOT = Path(__file__).resolve().parents[4]
"""The checkout this package is installed from (the workspace installs it editable)."""

__all__ = ["REPO_ROOT", "__version__"]
