"""The error every data loader raises for data it cannot read."""


class DataError(ValueError):
    """A data set could not be read; the message names the file and the problem."""
