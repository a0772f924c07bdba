"""geospade.models: the SPADE generator, style encoder, discriminators and losses.

Everything takes explicit constructor arguments; ``Generator.config`` is a plain dict that
``build_generator`` turns back into the same model (the checkpoint's ``generator_config``).
"""

from geospade.models.discriminator import MultiscaleDiscriminator, PatchDiscriminator
from geospade.models.encoder import StyleEncoder, kl_loss, reparameterize
from geospade.models.fused import (
    FusedGenerator,
    fused_available,
    fused_generator,
    synthesis_generator,
)
from geospade.models.generator import (
    Generator,
    SPADEResBlock,
    UpsamplingLayers,
    build_generator,
    inference_generator,
    make_noise,
)
from geospade.models.losses import (
    GanMode,
    VGGLoss,
    bands_to_rgb,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    load_vgg_loss,
)
from geospade.models.normalization import CLADE, SPADE, NormType, ParamFreeNorm, one_hot
from geospade.models.oasis import (
    OasisDiscriminator,
    labelmix,
    labelmix_loss,
    labelmix_mask,
    oasis_discriminator_loss,
    oasis_generator_loss,
)
from geospade.models.precision import (
    Precision,
    autocast_context,
    cpu_supports_bf16,
    parse_precision,
    resolve_device,
    to_channels_last,
)

__all__ = [
    "CLADE", "SPADE", "FusedGenerator", "GanMode", "Generator", "MultiscaleDiscriminator",
    "NormType", "OasisDiscriminator", "Precision",
    "ParamFreeNorm", "PatchDiscriminator", "SPADEResBlock", "StyleEncoder", "UpsamplingLayers",
    "VGGLoss", "autocast_context", "bands_to_rgb", "build_generator", "cpu_supports_bf16",
    "discriminator_loss", "feature_matching_loss", "fused_available", "fused_generator",
    "generator_loss", "inference_generator", "kl_loss", "labelmix", "labelmix_loss",
    "labelmix_mask", "load_vgg_loss", "make_noise", "oasis_discriminator_loss",
    "oasis_generator_loss", "one_hot",
    "parse_precision", "reparameterize", "resolve_device", "synthesis_generator",
    "to_channels_last",
]
