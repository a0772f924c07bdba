"""Shared fixtures: a small demo chip store made by `geospade tile` from a synthetic landscape."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from geospade.landscape import make_landscape
from geospade.raster.tiling import tile


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="session", autouse=True)
def offline(tmp_path_factory):
    """No test reaches the network or a user's cached weights.

    Connections to anything but loopback (the DDP test's rendezvous) raise, and torch hub's cache
    is an empty folder, so VGG/Inception weight lookups see what a fresh machine sees.
    """
    patch = pytest.MonkeyPatch()
    patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    patch.delenv("GEOSPADE_INCEPTION_WEIGHTS", raising=False)
    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise RuntimeError(f"a test tried to reach the network: {address}")
        return connect(sock, address)

    patch.setattr(socket.socket, "connect", loopback_only)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def landscape_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A 256 x 256 chesapeake7 land cover and aligned 4-band uint8 imagery (EPSG:26918, 1 m)."""
    root = tmp_path_factory.mktemp("landscape")
    paths = make_landscape(
        root / "landcover.tif", root / "imagery.tif", width=256, height=256,
        scheme="chesapeake7", bands=4, dtype="uint8", seed=0, feature_scale=0.3,
    )
    return paths.landcover, paths.imagery


@pytest.fixture(scope="session")
def chip_store(tmp_path_factory, landscape_pair) -> Path:
    """A chip store of 64-px chips: chesapeake7 (6 classes + ignore 255), 4 uint8 bands
    (red, green, blue, nir), 16 chips in blocks of 2 x 2 chips, 12 train and 4 val.

    Session-scoped and shared: tests must not modify it (copy it first).
    """
    landcover, imagery = landscape_pair
    out = tmp_path_factory.mktemp("chip_store") / "chips"
    tile(
        landcover, imagery, out, scheme="chesapeake7", size=64, block=2,
        val_fraction=0.25, seed=0, quiet=True,
    )
    return out
