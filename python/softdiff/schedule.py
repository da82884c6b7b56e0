"""``python -m softdiff.schedule``: the entry point of :mod:`softdiff.cli.schedule`
(designing a data set's corruption levels)."""

import sys

from softdiff.cli.schedule import main

if __name__ == "__main__":
    sys.exit(main())
