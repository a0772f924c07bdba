"""Reading the TOML files users write (training configs, pipeline configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geospade.errors import GeospadeError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """Parse the TOML file ``path``; ``what`` names it in errors ("config file", …).

    Raises:
        GeospadeError: the file is missing, or is not valid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise GeospadeError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GeospadeError(f"{path} is not valid TOML ({' '.join(str(exc).split())})") from None
