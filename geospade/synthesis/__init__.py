"""geospade.synthesis: sliding-window inference over a land-cover raster of any size."""

from geospade.synthesis.sliding import (
    SynthesisModel,
    format_summary,
    load_synthesis_model,
    synthesize,
    window_offsets,
)

__all__ = ["SynthesisModel", "format_summary", "load_synthesis_model", "synthesize",
           "window_offsets"]
