"""Errors of the evaluation tools; each message names the file or argument at fault and what was expected."""


class MetricsError(ValueError):
    """A bad input to the evaluation: a missing or corrupt file, mismatched sets, a bad option."""


class MissingInceptionWeights(MetricsError):
    """The Inception weights file needed for FID/KID was not given or is not there."""
