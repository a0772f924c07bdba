"""Messages through logging (silenced, redirected, printed plain) and progress off a terminal."""

from __future__ import annotations

import io
import logging
import re

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


def test_progress_lines_never_use_exponents(caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="geospade")
    bar = log.progress(total=5000, desc="tiling", unit="chip", interval=0, tty=False,
                       clock=clock)
    clock.now += 2.0
    bar.update(4460)
    assert caplog.records[-1].getMessage() == "tiling: 4460/5000 (89%), 2230 chip/s, ETA 0s"


def test_a_failed_or_abandoned_stage_logs_no_final_line(caplog):
    caplog.set_level(logging.INFO, logger="geospade")
    clock = FakeClock()
    with pytest.raises(RuntimeError), log.progress(total=3, interval=60, tty=False,
                                                   clock=clock) as bar:
        bar.update()
        raise RuntimeError("disk full")
    for i in log.progress(range(3), interval=60, tty=False, clock=clock):
        if i == 1:
            break
    assert caplog.records == []
    # A stage shorter than the interval stays silent; one that logged a line ends with one.
    with log.progress(total=3, interval=60, tty=False, clock=clock) as bar:
        bar.update(3)
    assert caplog.records == []
    with log.progress(total=3, interval=60, tty=False, clock=clock) as bar:
        clock.now += 60
        bar.update(2)
        bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("2/3 (67%), 30 s/it, ETA 30s")
    assert lines[1].startswith("3/3 (100%)") and lines[1].endswith("in 1m00s")


def test_the_cli_handler_does_not_repeat_the_stage_of_a_progress_line(monkeypatch):
    log.log_to_stderr()
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    clock = FakeClock()
    with log.progress(total=2, desc="train", logger="train", interval=0, tty=False,
                      clock=clock) as bar:
        clock.now += 1.0
        bar.update()
    with log.progress(total=2, desc="tiling", logger="tile", interval=0, tty=False,
                      clock=clock) as bar:
        clock.now += 1.0
        bar.update()
    log.get_logger("train").info("train: a message that happens to start so")
    assert err.getvalue().splitlines() == [
        "geospade train: 1/2 (50%), 1 it/s, ETA 1s",
        "geospade train: 1/2 (50%), 1 it/s, in 1s",
        "geospade tile: tiling: 1/2 (50%), 1 it/s, ETA 1s",
        "geospade tile: tiling: 1/2 (50%), 1 it/s, in 1s",
        "geospade train: train: a message that happens to start so",
    ]


# -- the stages adopt it: geospade.tile as a library call and through the CLI -----------------


@pytest.fixture(scope="module")
def tall_landscape(tmp_path_factory):
    """128 x 1280 px: 40 chips of 64 px in two read tasks of tiling, so two progress updates."""
    from geospade.landscape import make_landscape

    root = tmp_path_factory.mktemp("tall")
    paths = make_landscape(root / "lc.tif", root / "img.tif", width=128, height=1280,
                           feature_scale=0.3)
    return paths.landcover, paths.imagery


TILING_LINE = r"tiling: (\d+)/40 \(\d+%\), \d[\d.]* chip/s, (ETA \w+|in \w+)"


def test_off_a_terminal_library_tiling_logs_progress_through_the_geospade_logger(
        tall_landscape, tmp_path, monkeypatch, caplog, capsys):
    import geospade

    monkeypatch.setattr(log, "PROGRESS_INTERVAL", 0)  # every update logs: "every 30 s", fast
    caplog.set_level(logging.INFO, logger="geospade")
    summary = geospade.tile(*tall_landscape, tmp_path / "chips", size=64)
    assert sum(summary.counts.values()) == 40
    lines = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("geospade")]
    assert {name for name, _ in lines} == {"geospade.tile"}
    assert all(re.fullmatch(TILING_LINE, message) for _, message in lines), lines
    done = [int(re.match(TILING_LINE, message).group(1)) for _, message in lines]
    assert len(done) >= 3 and done == sorted(done) and done[0] < 40 and done[-2:] == [40, 40]
    assert " in " in lines[-1][1] and "ETA" in lines[-2][1]
    assert capsys.readouterr().err == ""  # through logging only: no handler, no output


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_on_a_terminal_the_logger_level_shows_or_hides_the_tiling_bar(
        tall_landscape, tmp_path, monkeypatch, caplog, level):
    import geospade

    log.log_to_stderr()
    logging.getLogger("geospade").setLevel(level)  # a library user's choice
    err = io.StringIO()
    err.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stderr", err)
    geospade.tile(*tall_landscape, tmp_path / "chips", size=64)
    if level == logging.INFO:
        assert "tiling: 100%" in err.getvalue() and "40/40" in err.getvalue()
    else:
        assert err.getvalue() == ""
    assert [r for r in caplog.records if r.name.startswith("geospade")] == []


def test_the_cli_prints_periodic_progress_lines_off_a_terminal_and_none_with_q(
        tall_landscape, tmp_path, monkeypatch, capsys):
    from cli_runner import run_cli

    monkeypatch.setattr(log, "PROGRESS_INTERVAL", 0)
    lc, img = map(str, tall_landscape)
    code, out, err = run_cli(["tile", lc, img, "-o", str(tmp_path / "a"), "--size", "64"],
                             capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) >= 3 and lines[-1].startswith("geospade tile: tiling: 40/40 (100%)")
    assert all(re.fullmatch("geospade tile: " + TILING_LINE, line) for line in lines), lines
    assert out.startswith("wrote 40 chips to")  # the summary stays on stdout
    # The CLI's handler was for that run only: a library call afterwards prints nothing.
    assert log.get_logger().handlers == [] and log.get_logger().level == logging.NOTSET
    code, out, err = run_cli(["tile", lc, img, "-o", str(tmp_path / "b"), "--size", "64", "-q"],
                             capsys)
    assert code == 0 and err == ""
