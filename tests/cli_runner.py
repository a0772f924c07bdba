"""Run the geospade CLI in-process, the way the console script does, for tests."""

from __future__ import annotations

from geospade.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``geospade ARGS``; return (exit code, stdout, stderr); success may not exit."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
