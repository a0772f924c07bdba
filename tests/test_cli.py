"""The command-line shell: help, version, one-line errors, `geospade info`."""

import json
import subprocess
import sys

from cli_runner import run_cli as run

from geospade import __version__
from geospade.cli import COMMANDS, main
from geospade.landscape import make_landscape


def test_help_lists_every_command(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for name in COMMANDS:
        assert name in out


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        code, out, _ = run([name, "--help"], capsys)
        assert code == 0, name
        assert "Usage: geospade" in out


def test_no_arguments_print_the_help(capsys):
    code, out, err = run([], capsys)
    assert code == 0 and err == ""
    assert out.startswith("Usage: geospade") and all(name in out for name in COMMANDS)


def test_output_into_a_closed_pipe_is_quiet():
    # `geospade ... | head`: the reader has gone before geospade writes.
    proc = subprocess.Popen([sys.executable, "-c", "from geospade.cli import main; main()",
                             "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert err == ""


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and __version__ in out


def test_unknown_command_is_one_line_error(capsys):
    code, _, err = run(["no-such-command"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("geospade: error:")


def test_info_describes_a_raster(tmp_path, capsys):
    make_landscape(tmp_path / "lc.tif", tmp_path / "im.tif", 40, 30, crs="EPSG:32618")
    main(["info", "--json", str(tmp_path / "im.tif")])
    facts = json.loads(capsys.readouterr().out)
    assert facts["kind"] == "raster"
    assert (facts["width"], facts["height"], facts["count"]) == (40, 30, 4)
    assert facts["crs"] == "EPSG:32618"
    assert facts["descriptions"] == ["red", "green", "blue", "nir"]


def test_info_on_a_non_raster_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    code, _, err = run(["info", str(bad)], capsys)
    assert code == 1
    assert err.count("\n") == 1 and "is not a raster" in err


def test_interrupt_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    import geospade.info

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(geospade.info, "describe", interrupted)
    code, _, err = run(["info", str(tmp_path)], capsys)
    assert code == 130
    assert err == "geospade: interrupted\n"


def test_unexpected_exception_is_one_line_without_traceback(tmp_path, capsys, monkeypatch):
    import geospade.info

    def broken(path):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(geospade.info, "describe", broken)
    monkeypatch.delenv("GEOSPADE_DEBUG", raising=False)
    code, _, err = run(["info", str(tmp_path)], capsys)
    assert code == 1
    assert err.count("\n") == 1 and "ZeroDivisionError: boom" in err and "Traceback" not in err
