"""The file formats geospade writes and reads, one module each (docs/design.md, "Formats").

- :mod:`geospade.formats.chip_store`: the chip store (``manifest.json``, ``images/``, ``masks/``,
  ``index.gpkg``).
- :mod:`geospade.formats.checkpoint`: the training checkpoint (``.pt``).
"""
