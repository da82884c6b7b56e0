"""``python -m softdiff_kernels``: print the available backends, the one each device uses, and why."""

from .dispatch import report

print(report())
