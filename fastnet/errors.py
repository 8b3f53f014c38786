"""The one error type fastnet raises for bad input: the CLI prints it as one line, no traceback; and warnings
as the CLI prints them."""

import unicodedata


class FastnetError(ValueError):
    """Something is wrong with the user's files, data or settings; the message says what to do. A ValueError, as
    Python and scikit-learn raise for bad values."""


def warning_line(message, *details, **more) -> str:
    """A warning as the command line shows it (warnings.formatwarning): one line, without Python's source line
    (a library's warning of several lines joined by spaces)."""
    return f"fastnet: warning: {printable(' '.join(str(message).splitlines()))}\n"


def printable(text: str) -> str:
    """text for one line on a terminal: each control character (a line break, the ESC of an escape sequence)
    and line or paragraph separator written as Python writes it in a string literal ('\\n', '\\x1b'). Names
    of files and classes may hold any of them; other characters, the ideographic space of a Japanese file name
    say, stay as they are, so that a path in a command can still be pasted."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
