"""The wheel: it ships the pipeline configs and the demo data, and an installed copy finds them
without the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "geospade" / "pipelines"
CONFIGS = ("demo.toml", "demo-landscape.toml", "chesapeake.toml")
DEMO_DATA = ("README.md", "scheme-nlcd8.json", "zion_landsat8_b2345.tif", "zion_nlcd8.tif")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the sources (no build/ or egg-info in the repo)."""
    pytest.importorskip("setuptools", minversion="77", reason="the dev extra's build backend")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "geospade", src / "geospade",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "-w", str(tmp / "dist"), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (built,) = (tmp / "dist").glob("geospade_synth-*.whl")
    return built


def test_the_repository_copies_of_the_pipelines_equal_the_packaged_ones():
    # pipelines/ (top level) stays for users of a clone; the package holds the installed copy.
    assert sorted(p.name for p in PACKAGED.glob("*.toml")) == sorted(CONFIGS)
    assert sorted(p.name for p in (ROOT / "pipelines").glob("*.toml")) == sorted(CONFIGS)
    for name in CONFIGS:
        assert (ROOT / "pipelines" / name).read_bytes() == (PACKAGED / name).read_bytes(), (
            f"pipelines/{name} differs from geospade/pipelines/{name}: edit one, copy it over")


def test_the_wheel_ships_the_pipeline_configs_and_the_demo_data(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in CONFIGS:
            assert zf.read(f"geospade/pipelines/{name}") == (PACKAGED / name).read_bytes()
        data = ROOT / "geospade" / "demo_data"
        assert sorted(p.name for p in data.iterdir()) == sorted(DEMO_DATA)
        for name in DEMO_DATA:
            assert zf.read(f"geospade/demo_data/{name}") == (data / name).read_bytes()
        assert "geospade/threads.py" in names and "geospade/log.py" in names
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        assert "License-Expression: MIT" in zf.read(metadata).decode()
    # Only the package: no tests, benchmarks or top-level folders in site-packages.
    assert {n.split("/")[0] for n in names} == {"geospade", "geospade_synth-0.1.0.dist-info"}


@pytest.mark.slow
def test_an_installed_wheel_runs_and_loads_its_packaged_demo(wheel, tmp_path):
    """Installed in a fresh venv (dependencies borrowed from this interpreter, not the repo):
    `python -m geospade run --help` works, `geospade run demo` finds the installed demo.toml,
    and its package: paths name the installed demo data."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The test interpreter's site-packages as a plain path: its .pth files (the editable
    # install's finder, which maps `geospade` to this repository) are not run from there.
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site, "borrowed-deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "--quiet", str(wheel)], check=True, capture_output=True,
                   text=True, timeout=300)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def run(*args: str) -> str:
        done = subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "Usage: geospade run [OPTIONS] CONFIG" in run("-m", "geospade", "run", "--help")
    out = run("-c", (
        "import geospade\n"
        "from geospade.pipeline import build_stages, find_config, load_config\n"
        "path = geospade.pipeline_files()['demo']\n"
        "assert find_config('demo') == path\n"
        "config = load_config(path)\n"
        "tile = [s for s in build_stages(config, __import__('pathlib').Path('w'))\n"
        "        if s.name == 'tile'][0]\n"
        "print(geospade.__file__)\n"
        "print(tile.inputs[0])\n"
        "print(config['_base'])\n"
        "print(config['train']['steps'], config['tile']['size'])\n"
    ))
    location, landcover, base, numbers = out.splitlines()
    assert Path(location).is_relative_to(env_dir) and not Path(location).is_relative_to(ROOT)
    assert Path(landcover) == Path(location).parent / "demo_data" / "zion_nlcd8.tif"
    assert Path(landcover).is_file()
    assert Path(base) == cwd  # the installed demo works in the current folder
    assert numbers == "1500 64"
