"""``python -m pydp.cli``."""

import sys

from pydp.cli import main

sys.exit(main())
