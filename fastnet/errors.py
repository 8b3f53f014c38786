"""The one error type fastnet raises for bad input: the CLI prints it as one line, no traceback."""


class FastnetError(Exception):
    """Something is wrong with the user's files, data or flags; the message says what to do."""
