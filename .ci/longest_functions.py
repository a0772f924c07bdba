"""Print the longest functions of the geospade package (issue 15: none over ~100 lines).

Usage: python .ci/longest_functions.py [N] [PACKAGE_DIR]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def function_lengths(root: Path) -> list[tuple[int, str]]:
    """(lines, "path:line name") of every function and method under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                where = path.relative_to(root.parent)
                found.append((length, f"{where}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent.parent / "geospade"
    print(f"{'lines':>5}  function")
    for length, where in function_lengths(root)[:count]:
        print(f"{length:>5}  {where}")


if __name__ == "__main__":
    main()
