"""gridclear-shared: see the module docstrings below for what each part does."""

from importlib.metadata import version as _version

__version__ = _version("gridclear-shared")
__all__ = ["__version__"]
