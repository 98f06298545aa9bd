"""``python -m privet``: the same command line as ``privet`` (used to start party processes portably)."""

import sys

from privet.cli import main

sys.exit(main())
