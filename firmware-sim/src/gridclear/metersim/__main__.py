"""``python -m gridclear.metersim``: the same as the ``gridclear-metersim`` command."""

import sys

from gridclear.metersim.cli import main

sys.exit(main())
