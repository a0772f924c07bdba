"""The file formats geospade writes and reads, one owner module each; everyone else calls it.

- :mod:`geospade.formats.chip_store`: the chip store (``manifest.json``, ``images/``, ``masks/``,
  ``index.gpkg``; docs/design.md, "Chip store").
- :mod:`geospade.formats.checkpoint`: the training checkpoint (``.pt``; docs/design.md, "Model
  and checkpoint").
"""
