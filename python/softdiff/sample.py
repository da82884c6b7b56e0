"""``python -m softdiff.sample``: the entry point of :mod:`softdiff.cli.sample` (drawing samples or restoring images
with a trained checkpoint). Run it, do not import it: ``softdiff.sample`` is the sampling function
``sd.sample``, and importing a module of that name would rebind the package attribute from the function to it."""

if __name__ != "__main__":
    raise ImportError("softdiff.sample is the sampling function (sd.sample); the command's module is "
                      "softdiff.cli.sample (run it as python -m softdiff.sample)")  # fmt: skip

import sys

from softdiff.cli.sample import main

sys.exit(main())
