"""The command-line programs whose module name would clash with the API they run.

``sd.sample`` is the sampling function; its command lives here as :mod:`softdiff.cli.sample` and is run as
``python -m softdiff.sample`` through the entry module ``softdiff/sample.py``, which is never imported (importing
it would rebind the package attribute ``softdiff.sample`` from the function to a module).
"""
