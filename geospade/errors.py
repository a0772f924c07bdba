"""The one exception type the library raises for bad input.

The CLI turns a :class:`GeospadeError` into a one-line message and a non-zero exit; library users
can catch it like any other exception.
"""


class GeospadeError(Exception):
    """Bad input or an unusable file: the message is meant for the user, on one line."""
