"""``python -m softdiff.demo``: the entry point of :mod:`softdiff.cli.demo`
(the no-training demo on exact denoisers)."""

from softdiff.cli.demo import main

if __name__ == "__main__":
    main()  # returns the summary dict; the exit status is 0
