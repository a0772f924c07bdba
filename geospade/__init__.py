"""geospade: turn classified land-cover maps into realistic, georeferenced aerial imagery.

The stages are plain functions (imported lazily, so ``import geospade`` does not load torch)::

    import geospade
    geospade.tile("landcover.tif", "naip.tif", "chips/", scheme="chesapeake7")
    geospade.train("chips/", "run/", steps=2000)
    geospade.synthesize("run/checkpoint.pt", "landcover.tif", "synthetic.tif", cog=True)
    geospade.evaluate("run/checkpoint.pt", "chips/", split="val")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "tile": "geospade.raster.tiling",
    "ChipDataset": "geospade.data.chips",
    "train": "geospade.training.loop",
    "TrainConfig": "geospade.training.config",
    "synthesize": "geospade.synthesis.sliding",
    "stitch": "geospade.raster.stitch",
    "generate": "geospade.synthesis.generate",
    "evaluate": "geospade.evaluation.report",
    "run_pipeline": "geospade.pipeline",
    "pipeline_files": "geospade.pipeline",
    "run_demo": "geospade.demo",
    "make_landscape": "geospade.landscape",
    "load_scheme": "geospade.schemes",
    "ClassScheme": "geospade.schemes",
    "GeospadeError": "geospade.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geospade' has no attribute {name!r}")
