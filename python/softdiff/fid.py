"""``python -m softdiff.fid``: the entry point of :mod:`softdiff.cli.fid`
(FID, KID, the proxies and the digit metric)."""

import sys

from softdiff.cli.fid import main

if __name__ == "__main__":
    sys.exit(main())
