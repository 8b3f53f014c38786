"""The one error type fastnet raises for bad input: the CLI prints it as one line, no traceback."""


class FastnetError(ValueError):
    """Something is wrong with the user's files, data or settings; the message says what to do. A ValueError, as
    Python and scikit-learn raise for bad values."""
