"""The one exception type the library raises for bad input.

The CLI turns a :class:`GeospadeError` into a one-line message and a non-zero exit; library users
can catch it like any other exception. Its :class:`ArgumentError` names the keyword argument at
fault ("batch_size must be …"), and the CLI prints :func:`cli_wording`, which names the flag
instead. The wording of failed reads and writes is in :mod:`geospade.io_errors`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


class GeospadeError(Exception):
    """Bad input or an unusable file: the message is meant for the user, on one line."""


def flag_of(argument: str) -> str:
    """The CLI flag of the keyword argument ``argument``: ``batch_size`` -> ``--batch-size``."""
    return "--" + argument.replace("_", "-")


class ArgumentError(GeospadeError):
    """A bad value of a library function's argument, worded for a Python caller.

    ``str(err)`` names the keyword argument ("batch_size must be at least 1, not 0"); the CLI
    prints :func:`cli_wording` instead, which names its flag ("--batch-size must be …").

    Args:
        argument: the keyword argument's name (``"batch_size"``), the message's first word.
        problem: what is wrong with it: the rest of the message. It may name the arguments
            in ``others``, each as a word, as ``name=True`` (a switch) or as ``name=VALUE`` (a
            quoted string or a number: "use amp='none'"); ``argument`` too, as a word only
            when ``others`` lists it (else it stays a word: "its 4 variants of a mask").
        flag: the CLI flag of ``argument``, when it is not :func:`flag_of`'s (``"-o"`` for
            ``out``, ``"--co"`` for ``creation_options``).
        others: the other arguments the message names, each a name or a ``(text, flag)``
            pair: the flag of a name that :func:`flag_of` does not give, or the CLI's words for
            a mention that is no plain name (``("alpha='band'", "--alpha band")``).
        leading: False for a message that does not start with ``argument`` (advice such as
            "… (pass overwrite=True to replace it)", "give bbox or window, not both"):
            ``problem`` is then the whole message.
    """

    def __init__(self, argument: str, problem: str, *, flag: str | None = None,
                 others: Iterable[str | tuple[str, str]] = (), leading: bool = True) -> None:
        self.argument = argument
        self.problem = problem
        self.leading = leading
        self.flags = {argument: flag or flag_of(argument)}
        self.others: list[str] = []
        for other in others:
            name, other_flag = (other, flag_of(other)) if isinstance(other, str) else other
            self.flags.setdefault(name, other_flag)
            self.others.append(name)
        self.message = f"{argument} {problem}" if leading else problem
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:
        # A worker process's error reaches its parent pickled; the default would call
        # ``type(self)(message)``, which neither this class nor a subclass takes.
        return (_rebuilt, (type(self), self.__dict__))


def _rebuilt(cls: type[ArgumentError], state: dict[str, Any]) -> ArgumentError:
    """An unpickled :class:`ArgumentError` (or subclass) with its attributes, without
    calling its ``__init__``."""
    err = cls.__new__(cls, state["message"])
    err.__dict__.update(state)
    return err


# An argument's name as a word of a message, not part of a path ("out/s.tif"), a flag or a
# quoted value; alone or with a value: "overwrite=True" is the flag alone, "amp='none'" and
# "variants=1" the flag and the value ("--amp none"). Two names may share a slash
# ("val_fraction/test_fraction").
_EDGE_BEFORE = r"(?<![\w./'\"-])"
_VALUE = r"(?:=(True\b|'[^']*'|-?\d+(?:\.\d+)?))?"
_EDGE_AFTER = r"(?![\w./'\"(-])"


def cli_wording(err: BaseException) -> str:
    """``err``'s message as the CLI prints it: an :class:`ArgumentError` names the flags of the
    arguments it names ("--batch-size must be at least 1, not 0"); any other error, as is."""
    if not isinstance(err, ArgumentError):
        return str(err)
    names = "|".join(re.escape(n) for n in sorted(err.flags, key=len, reverse=True))
    pattern = re.compile(f"{_EDGE_BEFORE}({names}){_VALUE}(?:/({names}){_VALUE})?{_EDGE_AFTER}")

    def flag(name: str, value: str | None) -> str:
        if value is None and name == err.argument and name not in err.others:
            return name  # an English word ("style needs a … style encoder")
        if value is None or value == "True":
            return err.flags[name]
        return err.flags[name] + " " + value.strip("'")

    def flags(match: re.Match) -> str:
        first, value, second, second_value = match.groups()
        text = flag(first, value)
        return text if second is None else f"{text}/{flag(second, second_value)}"

    problem = pattern.sub(flags, err.problem)
    return f"{err.flags[err.argument]} {problem}" if err.leading else problem


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
        ArgumentError: naming the argument, rather than numpy's "expected non-negative
            integer".
    """
    if seed < 0:
        raise ArgumentError("seed", f"must be a non-negative integer, not {seed}")


def check_format_header(data: object, where: str, kind: str, fmt: str, max_version: int,
                        required: tuple[str, ...] = (), hint: str = "") -> None:
    """Check the ``format``/``format_version`` header and required keys of a geospade file.

    Args:
        data: the decoded file (a dict when it is one of ours).
        where: the path, for messages; ``kind`` what it should be ("chip store",
            "checkpoint"); ``fmt`` its ``format`` value; ``max_version`` the newest version
            this geospade reads; ``required`` the keys it must have; ``hint`` added to the
            version message.

    Raises:
        GeospadeError: naming what is wrong, in one line.
    """
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise GeospadeError(f"{where} is not a geospade {kind} (format is not {fmt!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise GeospadeError(f"{where} has {kind} format version {version}; this geospade reads "
                            f"up to {max_version}{hint}")
    missing = [k for k in required if k not in data]
    if missing:
        raise GeospadeError(f"{where} is an incomplete {kind} (missing {', '.join(missing)})")
