"""``python -m softdiff_kernels``: print the available backends, the one each device uses, and why.

Each line names a device, a backend (cuda: the compiled extension, triton, torch: the PyTorch reference), whether
it can run there and why; the ``uses`` line is the dispatch's choice. ``SOFTDIFF_BACKEND=cuda|triton|torch``
forces one.
"""

import argparse

from .dispatch import report

argparse.ArgumentParser(
    prog="python -m softdiff_kernels", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
).parse_args()
print(report())
