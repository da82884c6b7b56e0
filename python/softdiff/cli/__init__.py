"""The command-line programs, one module each: ``train``, ``sample``, ``fid``, ``schedule`` and ``demo``. Each is
run as ``python -m softdiff.NAME`` through a thin entry module ``softdiff/NAME.py`` that only calls ``main``; the
library stays free of argument parsing.

``sd.sample`` is the sampling function: the entry module ``softdiff/sample.py`` is never imported (importing it
would rebind the package attribute ``softdiff.sample`` from the function to a module), and refuses to be.
"""
