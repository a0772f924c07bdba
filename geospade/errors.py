"""The one exception type the library raises for bad input.

The CLI turns a :class:`GeospadeError` into a one-line message and a non-zero exit; library users
can catch it like any other exception.
"""


class GeospadeError(Exception):
    """Bad input or an unusable file: the message is meant for the user, on one line."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), or its type's name.

    Library errors (GDAL's, torch.load's) often span many lines; a :class:`GeospadeError` that
    quotes one keeps to the one line it promises.
    """
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def check_seed(seed: int) -> None:
    """A seed is a non-negative integer (as numpy's and torch's generators expect).

    Raises:
        GeospadeError: naming the option, rather than numpy's "expected non-negative integer".
    """
    if seed < 0:
        raise GeospadeError(f"--seed must be a non-negative integer, not {seed}")
