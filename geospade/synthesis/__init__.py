"""geospade.synthesis: sliding-window inference over a land-cover raster of any size."""

from geospade.synthesis.model import SynthesisModel, load_synthesis_model
from geospade.synthesis.plan import window_offsets
from geospade.synthesis.sliding import format_summary, synthesize

__all__ = ["SynthesisModel", "format_summary", "load_synthesis_model", "synthesize",
           "window_offsets"]
