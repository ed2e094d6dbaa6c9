"""``python -m fvaudit.cli``."""
import sys

from fvaudit.cli import main

sys.exit(main())
