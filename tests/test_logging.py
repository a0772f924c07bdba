"""Messages through logging (silenced, redirected, printed plain) and progress off a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from geospade import log


@pytest.fixture(autouse=True)
def clean_logger():
    """Each test starts with the geospade loggers as an unconfigured program has them."""
    logger = log.get_logger()
    saved = (logger.level, list(logger.handlers), logger.propagate)
    logger.setLevel(logging.NOTSET)
    for h in saved[1]:
        logger.removeHandler(h)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.setLevel(saved[0])
    for h in saved[1]:
        logger.addHandler(h)
    for child in ("train", "tile"):
        log.get_logger(child).setLevel(logging.NOTSET)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cli_handler_prints_plain_lines_on_the_current_stderr(monkeypatch):
    log.log_to_stderr()
    log.log_to_stderr()  # a second call replaces the handler: no doubled lines
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    log.get_logger("train").info("1500 steps on cpu")
    log.get_logger("tile").warning("no chips in the test split")
    log.get_logger().info("done")
    assert err.getvalue().splitlines() == [
        "geospade train: 1500 steps on cpu",
        "geospade: warning: no chips in the test split",
        "geospade: done",
    ]


def test_a_library_user_can_silence_or_redirect_the_messages(monkeypatch, caplog):
    log.log_to_stderr()
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    logging.getLogger("geospade").setLevel(logging.ERROR)
    log.get_logger("train").info("hidden")
    log.get_logger("train").warning("hidden too")
    assert err.getvalue() == ""
    # Redirected: a user's handler (here pytest's) receives the records with their stage.
    logging.getLogger("geospade").setLevel(logging.INFO)
    with caplog.at_level(logging.INFO, logger="geospade"):
        log.get_logger("train").info("seen")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("geospade.train", "seen")]


def test_quiet_level_keeps_warnings_only(monkeypatch):
    log.log_to_stderr(logging.WARNING)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    log.get_logger("train").info("1500 steps on cpu")
    log.get_logger("train").warning("resuming with other chips")
    assert err.getvalue() == "geospade: warning: resuming with other chips\n"


def test_off_a_terminal_progress_logs_a_line_per_interval(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="geospade")
    bar = log.progress(total=100, desc="train", unit="it", interval=30, logger="train",
                       tty=False, clock=clock)
    for _ in range(100):
        clock.now += 1.0  # one step per second: a line every 30 steps
        bar.update()
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [r.name for r in caplog.records] == ["geospade.train"] * 4
    assert lines[0] == "train: 30/100 (30%), 1 it/s, ETA 1m10s"
    assert lines[1].startswith("train: 60/100 (60%), 1 it/s, ETA 40s")
    assert lines[2].startswith("train: 90/100 (90%)")
    assert lines[3] == "train: 100/100 (100%), 1 it/s, in 1m40s"


def test_interval_zero_logs_every_step_with_postfix_and_resume(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="geospade")
    items = []
    bar = log.progress(range(3), desc="tiling", unit="chip", interval=0, initial=0, tty=False,
                       clock=clock)
    for i in bar:
        clock.now += 0.5
        bar.set_postfix(loss=0.123456)
        items.append(i)
    assert items == [0, 1, 2]
    assert [r.getMessage() for r in caplog.records] == [
        "tiling: 1/3 (33%), 2 chip/s, ETA 1s, loss=0.1235",
        "tiling: 2/3 (67%), 2 chip/s, ETA 0s, loss=0.1235",
        "tiling: 3/3 (100%), 2 chip/s, ETA 0s, loss=0.1235",
        "tiling: 3/3 (100%), 2 chip/s, in 2s, loss=0.1235",
    ]
    # A resumed run counts its rate from where it started; slow steps read as s/unit.
    caplog.clear()
    resumed = log.progress(total=10, desc="train", initial=8, interval=0, tty=False, clock=clock)
    clock.now += 4.0
    resumed.update()
    assert caplog.records[-1].getMessage() == "train: 9/10 (90%), 4 s/it, ETA 4s"


def test_progress_is_silent_when_quiet_or_silenced(caplog):
    caplog.set_level(logging.INFO, logger="geospade")
    clock = FakeClock()
    bar = log.progress(total=5, quiet=True, interval=0, tty=False, clock=clock)
    bar.update(5)
    bar.close()
    logging.getLogger("geospade").setLevel(logging.WARNING)
    bar = log.progress(total=5, interval=0, tty=False, clock=clock)
    bar.update(5)
    bar.close()
    assert caplog.records == []


def test_on_a_terminal_progress_is_a_tqdm_bar(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="geospade")
    err = io.StringIO()
    err.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", err)
    with log.progress(total=4, desc="synthesize", unit="win") as bar:
        bar.update(4)
    from tqdm import tqdm

    assert isinstance(bar._bar, tqdm)
    assert "synthesize: 100%" in err.getvalue() and "4/4" in err.getvalue()
    assert caplog.records == []  # no log lines beside the bar
    err2 = io.StringIO()
    err2.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", err2)
    log.progress(total=4, quiet=True).update(4)
    assert err2.getvalue() == ""
