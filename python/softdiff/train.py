"""``python -m softdiff.train``: the entry point of :mod:`softdiff.cli.train`. The settings and presets live in
:mod:`softdiff.training.config`, the loop in :mod:`softdiff.training.loop`."""

import sys

from softdiff.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
