"""The training configuration: one flat dataclass, loadable from TOML, saved with every run.

Precedence: dataclass defaults < ``--config FILE.toml`` < command-line options (or keyword
arguments of :func:`geospade.training.loop.train`). The resolved config is written to
``RUN/config.toml`` (a file ``--config`` accepts again) and stored in the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from geospade.errors import GeospadeError
from geospade.models.precision import Precision
from geospade.toml_files import read_toml

GAN_MODES = ("hinge", "ls", "original")
NORMS = ("spade", "clade")
PARAM_FREE_NORMS = ("batch", "instance")
UPSAMPLING = ("normal", "more", "most")
DISCRIMINATORS = ("patchgan", "oasis")
"""``patchgan``: multi-scale PatchGAN on (class map, image) pairs (SPADE); ``oasis``: per-pixel
segmentation into the classes and "fake" (Schönfeld et al. 2021)."""
AMP_MODES = tuple(p.value for p in (Precision.NONE, Precision.BF16, Precision.FP16,
                                     Precision.AUTO))
"""The :class:`~geospade.models.precision.Precision` values training takes (no ``auto``)."""
DEFAULT_STEPS = 2000
LENGTH_OPTIONS = ("steps", "epochs")
"""The two ways to say how long a run is; a run gives one of them."""


@dataclass
class TrainConfig:
    """Every option of ``geospade train``; the defaults follow the SPADE paper where it has one.

    Args:
        steps: training iterations (one G step + one D step each); 2000 unless ``epochs``.
        epochs: train this many passes over the train split instead of ``steps`` (giving
            both is an error: one would silently win).
        batch_size: chips per iteration (per process under torchrun).
        ngf: generator width (channels of its last block).
        ndf: discriminator width (channels of its first layer).
        num_d: number of discriminator scales (PatchGAN).
        n_layers_d: conv layers per discriminator (PatchGAN).
        discriminator: ``patchgan`` (SPADE's multi-scale PatchGAN, with feature matching) or
            ``oasis`` (a U-Net segmenting each pixel into the classes and "fake", with
            class-balanced cross-entropy and LabelMix; no feature matching, no VGG needed).
        lr_g: generator learning rate (TTUR: lower than D's).
        lr_d: discriminator learning rate.
        beta1: Adam beta1.
        beta2: Adam beta2.
        lambda_fm: weight of the discriminator feature-matching loss (PatchGAN).
        lambda_vgg: weight of the VGG19 perceptual loss (0 turns it off).
        lambda_kl: weight of the style encoder's KL loss (with ``use_vae``).
        lambda_labelmix: weight of the LabelMix consistency loss (OASIS; 0 turns it off).
        gan_mode: ``hinge``, ``ls`` (least squares) or ``original`` (cross-entropy).
        use_vae: train a style encoder; the generator starts from its z.
        z_dim: size of the style code.
        noise_dim: channels of OASIS-style noise beside the class map in the generator (one
            N(0, 1) vector per image at every pixel; 0: none, one class map gives one image).
        norm: ``clade`` (per-class lookup of the modulation, Tan et al. 2021; the default) or
            ``spade`` (a conv net on the class map, Park et al. 2019). At the same CPU time,
            CLADE's images trained land-cover U-Nets better on both real data sets of
            ``benchmarks/bench_utility.py`` (docs/design.md, "Default generator").
        param_free_norm: ``batch`` (frozen at inference: no seams when tiling) or ``instance``.
        num_upsampling_layers: ``normal`` (stride 32), ``more`` (64), ``most`` (128).
        spectral_norm: spectral normalisation in generator and discriminator.
        spade_hidden: channels of each SPADE layer's shared conv (unused by CLADE).
        device: ``auto`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:1`` …
        amp: ``none``, ``bf16`` (CPU or CUDA), ``fp16`` (CUDA, with gradient scaling) or
            ``auto`` (bf16 where the device computes it natively, else none; the run's
            ``config.toml`` and checkpoint record the precision it resolved to).
        channels_last: channels-last feature maps (faster convolutions with bf16 and fp16);
            parameters stay contiguous (see ``geospade.models.to_channels_last``). None
            (default): on with ``amp`` bf16 or fp16, off with fp32
            (:meth:`TrainConfig.uses_channels_last`).
        seed: seed of weights, data order, augmentation and noise.
        workers: DataLoader worker processes.
        threads: torch CPU threads during training; 0: automatic, from the CPUs free
            (:func:`geospade.threads.choose_threads`). On a small, shared machine 1 can be much
            faster than 2 (threads wait on each other).
        augment: random flips / 90° rotations of the training chips.
        ema_decay: decay of the exponential moving average of the generator weights.
        lr_decay_start: step from which both learning rates fall linearly to zero at the last
            step (default: half-way, as SPADE's niter/niter_decay).
        checkpoint_every: write ``RUN/checkpoint.pt`` every N steps (and always at the end).
        preview_every: write a preview PNG every N steps (0: never).
        val_every: validate on the val split every N steps (0: only at the end, if it exists).
        log_every: write a metrics row every N steps.
        val_chips: at most this many val chips per validation.
        vgg_weights: ``auto`` (torchvision's cached ImageNet weights, downloading them if not
            cached and the network allows), ``off``, or a path to a VGG19 state dict.
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 4
    ngf: int = 64
    ndf: int = 64
    num_d: int = 2
    n_layers_d: int = 4
    discriminator: str = "patchgan"
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    lambda_fm: float = 10.0
    lambda_vgg: float = 10.0
    lambda_kl: float = 0.05
    lambda_labelmix: float = 10.0
    gan_mode: str = "hinge"
    use_vae: bool = False
    z_dim: int = 256
    noise_dim: int = 0
    norm: str = "clade"
    param_free_norm: str = "batch"
    num_upsampling_layers: str = "normal"
    spectral_norm: bool = True
    spade_hidden: int = 128
    device: str = "auto"
    amp: str = "none"
    channels_last: bool | None = None
    seed: int = 0
    workers: int = 0
    threads: int = 0
    augment: bool = True
    ema_decay: float = 0.999
    lr_decay_start: int | None = None
    checkpoint_every: int = 500
    preview_every: int = 500
    val_every: int = 1000
    log_every: int = 10
    val_chips: int = 16
    vgg_weights: str = "auto"

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            self.steps = DEFAULT_STEPS
        self.validate()

    def validate(self) -> None:
        """Raise :class:`GeospadeError` naming the first option with an impossible value."""
        choices = {
            "gan_mode": GAN_MODES, "norm": NORMS, "param_free_norm": PARAM_FREE_NORMS,
            "num_upsampling_layers": UPSAMPLING, "amp": AMP_MODES,
            "discriminator": DISCRIMINATORS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise GeospadeError(
                    f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}"
                )
        if self.steps is not None and self.epochs is not None:
            raise GeospadeError(
                f"give steps or epochs, not both (steps={self.steps}, epochs={self.epochs}): "
                "epochs trains that many passes over the train split instead of steps"
            )
        positive = ("steps", "epochs", "batch_size", "ngf", "ndf", "num_d", "n_layers_d",
                    "z_dim", "spade_hidden", "checkpoint_every", "log_every", "val_chips")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GeospadeError(f"{name} must be positive, not {value}")
        for name in ("preview_every", "val_every", "workers", "threads", "seed", "noise_dim"):
            if getattr(self, name) < 0:
                raise GeospadeError(f"{name} must be 0 or more, not {getattr(self, name)}")
        for name in ("lr_g", "lr_d", "lambda_fm", "lambda_vgg", "lambda_kl", "lambda_labelmix"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise GeospadeError(f"{name} must be a finite number >= 0, not {value}")
        if not (0.0 <= self.ema_decay < 1.0):
            raise GeospadeError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise GeospadeError("Adam betas must be in [0, 1)")
        if self.lr_decay_start is not None and self.lr_decay_start < 0:
            raise GeospadeError(f"lr_decay_start must be 0 or more, not {self.lr_decay_start}")

    def uses_channels_last(self) -> bool:
        """Whether the run computes channels-last: ``channels_last``, or when that is None
        (automatic), whether ``amp`` is bf16 or fp16 (channels-last is what makes their
        convolutions fast; in fp32 it is no faster)."""
        if self.channels_last is None:
            return self.amp in (Precision.BF16.value, Precision.FP16.value)
        return self.channels_last

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Build a config from plain values, rejecting unknown keys and wrong types."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise GeospadeError(f"{source}: unknown option(s) {', '.join(unknown)}")
        values = {k: _coerce(k, v, known[k].type, source) for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_saved(cls, data: Mapping[str, Any], source: str = "checkpoint config"
                   ) -> TrainConfig:
        """A config a checkpoint stored, from any geospade version.

        Runs stored the default ``steps`` beside ``epochs`` before the two excluded each other;
        ``epochs`` set the length then, and still does.
        """
        data = dict(data)
        if data.get("epochs") is not None and data.get("steps") is not None:
            data["steps"] = None
        # Checkpoints store every option; one without ``norm`` comes from before the option
        # existed, when every generator was SPADE (the default was spade until CLADE's images
        # measured more useful).
        data.setdefault("norm", "spade")
        return cls.from_dict(data, source=source)

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with ``overrides`` applied (``None`` values are ignored: "not given").

        ``steps`` and ``epochs`` are one setting given two ways: overriding one unsets the
        other (a ``--steps`` on the command line beats a config file's ``epochs``); overriding
        both is an error.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        data = self.to_dict()
        for name, other in (LENGTH_OPTIONS, LENGTH_OPTIONS[::-1]):
            if name in given and other not in given:
                data[other] = None
        data.update(given)
        return TrainConfig.from_dict(data, source="options")


def _coerce(name: str, value: Any, annotation: str, source: str) -> Any:
    """Check ``value`` against the field's annotation (a string, as annotations are postponed)."""
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise GeospadeError(f"{source}: {name} needs a value")
    base = annotation.split("|")[0].strip()
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[base]
    if not ok:
        raise GeospadeError(f"{source}: {name} must be {base}, not {value!r}")
    return float(value) if base == "float" else value


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (flat keys, or under a ``[train]`` table) into a plain dict."""
    path = Path(path)
    data = read_toml(path, "config file")
    if isinstance(data.get("train"), dict):
        data = data["train"]
    data = {k.replace("-", "_"): v for k, v in data.items()}
    try:
        TrainConfig.from_dict(data, source=str(path))  # validate early, naming the file
    except GeospadeError as exc:
        message = str(exc)
        raise GeospadeError(message if message.startswith(str(path)) else f"{path}: {message}"
                            ) from None
    return data


def resolve_config(
    config: TrainConfig | Mapping[str, Any] | str | Path | None = None, **overrides: Any
) -> TrainConfig:
    """Defaults, then ``config`` (object, dict or TOML path), then non-``None`` ``overrides``."""
    if config is None:
        base = TrainConfig()
    elif isinstance(config, TrainConfig):
        base = config
    elif isinstance(config, Mapping):
        base = TrainConfig.from_dict(config)
    else:
        base = TrainConfig.from_dict(load_config_file(config), source=str(config))
    return base.replace(**overrides)


def given_options(config: TrainConfig | Mapping[str, Any] | str | Path | None = None,
                  **overrides: Any) -> dict[str, Any]:
    """The options ``config`` and non-``None`` ``overrides`` set explicitly, parsed.

    A :class:`TrainConfig` sets all of its fields; a dict or TOML file only its keys. ``--resume``
    compares these with the checkpoint's config.
    """
    if config is None:
        given: dict[str, Any] = {}
    elif isinstance(config, TrainConfig):
        given = config.to_dict()
    else:
        if isinstance(config, Mapping):
            data, source = dict(config), "config"
        else:
            data, source = load_config_file(config), str(config)
        parsed = TrainConfig.from_dict(data, source=source).to_dict()
        given = {k: parsed[k] for k in data}
    given.update({k: v for k, v in overrides.items() if v is not None})
    return given


def to_toml(config: TrainConfig) -> str:
    """The config as TOML that :func:`load_config_file` reads back (unset options omitted)."""
    lines = ["# geospade train: resolved configuration", "[train]"]
    for key, value in config.to_dict().items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
