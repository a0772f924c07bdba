"""Messages and progress through Python's :mod:`logging`, as a library should.

Every message geospade prints goes to the ``geospade`` logger or a child named after its stage
(``geospade.train``, ``geospade.tile``, …), so a library user silences or redirects them like
any other library's::

    import logging
    logging.getLogger("geospade").setLevel(logging.WARNING)   # warnings only, no progress
    geospade.log.log_to_stderr()                              # or: what the CLI prints

Unconfigured, Python shows warnings on stderr and drops the rest. The command line installs
:func:`log_to_stderr`: plain lines (``geospade train: 1500 steps on cpu``, ``geospade: warning:
…``) on the current stderr.

:func:`progress` shows a tqdm bar when stderr is a terminal; under SLURM, nohup, cron or a
notebook, where a bar is either invisible or thousands of carriage returns, it logs a line at
most every ``interval`` seconds instead (``train: 120/1500 (8%), 3.2 it/s, ETA 7m10s``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ROOT = "geospade"
PROGRESS_INTERVAL = 30.0
"""Seconds between progress lines off a terminal, unless a call passes ``interval``; set it
(``geospade.log.PROGRESS_INTERVAL = 300``) for sparser logs."""
_PROGRESS = "geospade_progress"
"""The attribute of a progress line's log record that holds the description it starts with."""


def get_logger(stage: str | None = None) -> logging.Logger:
    """The ``geospade`` logger, or its child for one stage (``get_logger("train")``)."""
    return logging.getLogger(ROOT if not stage else f"{ROOT}.{stage}")


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is at each message (click's test
    runner, pytest and notebooks replace it after the handler was made)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        # Not setStream(): it flushes the old stream, which a test runner may have closed.
        self.stream = sys.stderr
        super().emit(record)


class PlainFormatter(logging.Formatter):
    """``geospade STAGE: message`` for information, ``geospade: warning: message`` above.

    A progress line whose description is its stage reads ``geospade train: 120/1500 …``,
    not ``geospade train: train: 120/1500 …``.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"{ROOT}: {record.levelname.lower()}: {message}"
        stage = record.name.removeprefix(ROOT).lstrip(".")
        if stage and getattr(record, _PROGRESS, None) == stage:
            message = message.removeprefix(f"{stage}: ")
        return f"{ROOT} {stage}: {message}" if stage else f"{ROOT}: {message}"


def log_to_stderr(level: int = logging.INFO) -> logging.Handler:
    """Print geospade's messages as plain lines on stderr (what the CLI does).

    Calling it again replaces the handler it installed before, so messages never double.

    Args:
        level: the lowest level shown: ``logging.INFO`` (messages and progress) or
            ``logging.WARNING`` (``--quiet``: warnings and errors only).

    Returns:
        The handler, to remove with ``logging.getLogger("geospade").removeHandler(h)``.
    """
    logger = get_logger()
    for old in [h for h in logger.handlers if isinstance(h, _CurrentStderr)]:
        logger.removeHandler(old)
    handler = _CurrentStderr()
    handler.setFormatter(PlainFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def silenced(logger: logging.Logger) -> bool:
    """True when someone turned geospade's information off: a level above INFO set on the
    logger or one of its ``geospade`` parents, or a disabled logger. (Python's default root
    level, WARNING, does not count: unconfigured, a terminal still gets its progress bar.)"""
    node: logging.Logger | None = logger
    while node is not None and node.name.startswith(ROOT):
        if node.disabled or node.level > logging.INFO:
            return True
        if node.level:  # an explicit INFO or lower wins over the parents
            return False
        node = node.parent
    return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _number(value: float) -> str:
    # Three significant digits, but never "2.23e+03".
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _rate(done: float, elapsed: float, unit: str) -> str:
    if done <= 0 or elapsed <= 0:
        return f"? {unit}/s"
    per_second = done / elapsed
    return (f"{_number(per_second)} {unit}/s" if per_second >= 1
            else f"{_number(1 / per_second)} s/{unit}")


class Progress:
    """A tqdm bar on a terminal, else a log line every ``interval`` seconds; see
    :func:`progress`. Update it by iterating or with :meth:`update`; close it (or use it as a
    context manager) to log the final line."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str,
                 quiet: bool, interval: float, unit: str, initial: int,
                 logger: logging.Logger, tty: bool | None,
                 clock: Callable[[], float]) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self._initial, self._interval, self._clock = initial, initial, interval, clock
        self._logger, self._postfix = logger, ""
        shown = not quiet and not silenced(logger)
        on_tty = sys.stderr.isatty() if tty is None else tty
        self._bar = None
        if shown and on_tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                             dynamic_ncols=True, file=sys.stderr)
        self._logging = shown and not on_tty
        self._start = self._last = clock()
        self._closed = False
        self._reported = False  # a periodic line was logged: the stage was long enough to tell

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("progress(...) without an iterable: call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update()
        except BaseException:  # a failure or a break (GeneratorExit): no "done" line
            self.close(final=False)
            raise
        self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # A stage that failed logs no final "in 12s" line: its error is the last word.
        self.close(final=exc_type is None)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done; log a line if ``interval`` seconds passed since the last."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._logging:
            now = self._clock()
            if now - self._last >= self._interval:
                self._last = now
                self._reported = True
                self._log(self.line(now))

    def set_postfix(self, **values: Any) -> None:
        """Extra ``key=value`` pairs (losses, …) for the bar and the log lines."""
        if self._bar is not None:
            self._bar.set_postfix(**values)
        self._postfix = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())

    def line(self, now: float | None = None, final: bool = False) -> str:
        """The log line: ``desc: 120/1500 (8%), 3.2 it/s, ETA 7m10s[, postfix]``."""
        elapsed = (self._clock() if now is None else now) - self._start
        done = self.n - self._initial
        parts = [f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total
                 else f"{self.n} {self.unit}"]
        parts.append(_rate(done, elapsed, self.unit))
        if final:
            parts.append(f"in {_duration(elapsed)}")
        elif self.total and done > 0:
            parts.append(f"ETA {_duration((self.total - self.n) * elapsed / done)}")
        if self._postfix:
            parts.append(self._postfix)
        return f"{self.desc}: {', '.join(parts)}" if self.desc else ", ".join(parts)

    def close(self, final: bool = True) -> None:
        """End the bar, or log the final line (when ``final`` and the stage lasted long enough
        to log a periodic line: a stage of a few seconds stays silent off a terminal)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._logging and final and self._reported and self.n > self._initial:
            self._log(self.line(final=True))

    def _log(self, line: str) -> None:
        self._logger.info(line, extra={_PROGRESS: self.desc})


def progress(iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
             quiet: bool = False, interval: float | None = None, unit: str = "it",
             initial: int = 0,
             logger: logging.Logger | str | None = None, tty: bool | None = None,
             clock: Callable[[], float] = time.monotonic) -> Progress:
    """Progress of a long stage: a tqdm bar on a terminal, periodic log lines elsewhere.

    Args:
        iterable: what to iterate over (or None, and call :meth:`Progress.update`).
        total: how many items (default: ``len(iterable)`` when it has one).
        desc: what is counted, the start of each line (``"train"``, ``"tiling"``).
        quiet: show nothing.
        interval: seconds between log lines when stderr is not a terminal (default
            :data:`PROGRESS_INTERVAL`, read at each call).
        unit: unit of the rate (``"it"``, ``"chip"``, ``"win"``).
        initial: count already done (a resumed run); rates count from here.
        logger: the logger (or stage name for :func:`get_logger`) of the lines; ``geospade``.
        tty: force terminal (True) or log (False) mode; default ``sys.stderr.isatty()``.
        clock: seconds, monotonic (tests pass a fake one).

    Returns:
        A :class:`Progress`: iterate over it, or ``update(n)`` it; close it when done.
    """
    if not isinstance(logger, logging.Logger):
        logger = get_logger(logger)
    if interval is None:
        interval = PROGRESS_INTERVAL
    return Progress(iterable, total, desc, quiet, interval, unit, initial, logger, tty, clock)
