"""SAM2 model handling: which official variant a checkpoint is, its config, the device, random weights.

Official checkpoints (``sam2_hiera_tiny.pt`` ... ``sam2.1_hiera_large.pt``) are dicts whose key
``"model"`` holds the state dict. The variant is read from the tensors (trunk width, block count,
SAM2.1-only parameters) and cross-checked against the file name and any configured override, so
a checkpoint that does not fit its config fails with one message naming both. Nothing is downloaded.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...settings import WorkerSettings
from .base import EngineError
from .device import compile_modules, uses_cuda_graphs

if TYPE_CHECKING:  # sam2 is imported only when a model is built; it ships no type information (Any to mypy)
    from sam2.modeling.sam2_base import SAM2Base

log = logging.getLogger(__name__)

TRUNK_KEY = "image_encoder.trunk.patch_embed.proj.weight"
SAM21_KEY = "no_obj_embed_spatial"  # a parameter only SAM2.1 models have
# size -> (config suffix, trunk embed dim, trunk blocks)
SIZES: dict[str, tuple[str, int, int]] = {
    "tiny": ("t", 96, 12), "small": ("s", 96, 16), "base_plus": ("b+", 112, 24), "large": ("l", 144, 48),
}
_SHORT = {short: size for size, (short, _, _) in SIZES.items()}
_NAME = re.compile(r"(sam2(?:\.1)?)_hiera_(tiny|small|base_plus|large|b\+|t|s|l)(?![a-z0-9])", re.IGNORECASE)
# Same post-processing switches as sam2.build_sam.build_sam2, so results match SAM2's own predictor.
POSTPROCESSING_OVERRIDES = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)


@dataclass(frozen=True)
class Sam2Variant:
    """One official SAM2 model: version ('sam2' or 'sam2.1') and size ('tiny' ... 'large')."""

    version: str
    size: str

    @property
    def name(self) -> str:
        """The official checkpoint's file stem, e.g. 'sam2.1_hiera_base_plus'."""
        return f"{self.version}_hiera_{self.size}"

    @property
    def config(self) -> str:
        """The sam2 package's config for this variant, e.g. 'configs/sam2.1/sam2.1_hiera_b+.yaml'."""
        return f"configs/{self.version}/{self.version}_hiera_{SIZES[self.size][0]}.yaml"

    def describe(self) -> str:
        _, dim, blocks = SIZES[self.size]
        return f"{self.name} (Hiera trunk: embed dim {dim}, {blocks} blocks)"


def variant_from_name(text: str) -> Sam2Variant | None:
    """The variant a file or config name spells ('sam2.1_hiera_small.pt', 'sam2_hiera_b+'), or None."""
    match = _NAME.search(Path(text).name)
    if match is None:
        return None
    version, size = match.group(1).lower(), match.group(2).lower()
    return Sam2Variant(version, _SHORT.get(size, size))


def variant_from_state_dict(state: dict[str, torch.Tensor], what: str = "checkpoint") -> Sam2Variant:
    """The variant whose tensor shapes ``state`` has; EngineError if it is no official SAM2 model."""
    if TRUNK_KEY not in state:
        raise EngineError(f"{what} is not a SAM2 model: it has no {TRUNK_KEY!r} tensor "
                          f"({len(state)} tensors, e.g. {', '.join(list(state)[:3]) or 'none'})")
    dim = int(state[TRUNK_KEY].shape[0])
    blocks = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))),
                     default=-1)
    version = "sam2.1" if SAM21_KEY in state else "sam2"
    for size, (_, d, b) in SIZES.items():
        if (d, b) == (dim, blocks):
            return Sam2Variant(version, size)
    known = ", ".join(f"{s} {d}/{b}" for s, (_, d, b) in SIZES.items())
    raise EngineError(f"{what} holds a Hiera trunk with embed dim {dim} and {blocks} blocks, which is no official "
                      f"SAM2 model (embed dim/blocks: {known})")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file: an official ``{"model": state_dict}`` or a bare state dict."""
    if not path.is_file():
        raise EngineError(f"SAM2 checkpoint {path} does not exist")
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or truncated file
        raise EngineError(f"SAM2 checkpoint {path} is not a readable torch checkpoint: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise EngineError(f"SAM2 checkpoint {path} holds no state dict (expected a dict with key 'model')")
    return data


def model_config(config: str, image_size: int) -> Any:
    """The OmegaConf model config of a sam2 package config name/path or of a YAML file."""
    import sam2  # noqa: F401  (initializes hydra's config search path)
    from hydra import compose
    from omegaconf import OmegaConf

    overrides = [f"++model.image_size={image_size}", *POSTPROCESSING_OVERRIDES]
    path = Path(config)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    else:
        variant = variant_from_name(config)
        if variant is None:
            raise EngineError(f"SAM2 config {config!r} is neither a YAML file nor an official variant name "
                              "(e.g. sam2.1_hiera_t, sam2_hiera_base_plus)")
        cfg = compose(config_name=variant.config, overrides=overrides)
    OmegaConf.resolve(cfg)
    if "model" not in cfg:
        raise EngineError(f"SAM2 config {config!r} has no 'model' section")
    return cfg.model


def build_model(config: str, image_size: int, seed: int | None = None) -> SAM2Base:
    """The SAM2 architecture of ``config`` at ``image_size``, randomly initialized (seeded if given), on the CPU."""
    from hydra.utils import instantiate

    cfg = model_config(config, image_size)
    if seed is not None:
        torch.manual_seed(seed)
    model = instantiate(cfg, _recursive_=True)
    if getattr(model, "image_size", image_size) != image_size:
        raise EngineError(f"SAM2 config {config!r} did not take image_size {image_size}")
    return model


RANDOM_PRESENCE_BIAS = 1.0


def see_objects(model: SAM2Base) -> None:
    """Shift a random model's object-presence score up, so it reads objects as present.

    Untrained, that head scores every frame just below zero, which SAM2 reads as "no object": every
    mask would be empty and every test of the mask path vacuous. Random weights are for tests only."""
    head = getattr(model.sam_mask_decoder, "pred_obj_score_head", None)
    if head is None:
        return
    last = head.layers[-1] if hasattr(head, "layers") else head
    with torch.no_grad():
        last.bias += RANDOM_PRESENCE_BIAS


def check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, config: str) -> None:
    """EngineError, with a short summary, unless ``state`` has exactly ``model``'s tensors and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in state and state[k].shape != own[k].shape]
    if not (missing or unexpected or reshaped):
        return
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("with other shapes", reshaped)):
        if names:
            parts.append(f"{len(names)} {label} (e.g. {', '.join(names[:3])})")
    raise EngineError(f"{what} does not fit config {config!r}: " + "; ".join(parts))


@dataclass
class LoadedSam2:
    model: SAM2Base  # eval mode, on ``device``
    variant: Sam2Variant
    device: torch.device
    random_weights: bool
    source: str  # checkpoint path or 'random weights (seed N)'
    compiled: tuple[str, ...] = ()  # modules run through torch.compile (worker.compile_*)
    cuda_graphs: bool = False  # whether compiled modules replay CUDA graphs (their outputs are overwritten)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bfloat16 on CUDA, None (float32) on the CPU."""
        return torch.bfloat16 if self.device.type == "cuda" else None


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu. On CUDA, TF32 matmuls are enabled."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EngineError("worker.device is 'cuda' but no CUDA device is available (use 'cpu' or 'auto')")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def load_sam2(settings: WorkerSettings) -> LoadedSam2:
    """The SAM2 model the settings name: a checkpoint (variant detected and checked) or, only when
    ``random_weights`` is set, the seeded random architecture of ``sam2_config`` (default SAM2.1 tiny)."""
    device = resolve_device(settings.device)
    if settings.checkpoint is not None:
        path = Path(settings.checkpoint)
        state = read_checkpoint(path)
        found = variant_from_state_dict(state, f"checkpoint {path}")
        named = variant_from_name(path.name)
        if named is not None and named != found:
            raise EngineError(f"checkpoint {path} is named like {named.name} but its tensors are {found.describe()}")
        config = settings.sam2_config or found.config
        wanted = variant_from_name(config)
        if wanted is not None and wanted != found:
            raise EngineError(f"checkpoint {path} is {found.describe()}, but config {config!r} is "
                              f"{wanted.describe()}; drop the config override or use the matching checkpoint")
        model = build_model(config, settings.image_size)
        check_fits(model, state, f"checkpoint {path}", config)
        model.load_state_dict(state)
        source, random_weights = str(path), False
    elif settings.random_weights:
        config = settings.sam2_config or Sam2Variant("sam2.1", "tiny").config
        model = build_model(config, settings.image_size, seed=settings.seed)
        found = variant_from_state_dict(model.state_dict(), f"config {config!r}")
        see_objects(model)
        source, random_weights = f"random weights (seed {settings.seed})", True
    else:
        raise EngineError("a SAM2 engine needs worker.checkpoint (an official SAM2/SAM2.1 .pt file); "
                          "random weights must be asked for explicitly (worker.random_weights, tests only)")
    if settings.image_size != 1024 and not random_weights:
        log.warning("SAM2 runs at image_size %d; official weights are trained at 1024", settings.image_size)
    model = model.to(device).eval()
    compiled = compile_modules(model, settings.compile_image_encoder, settings.compile_memory_attention,
                               settings.compile_mode, settings.compile_backend)
    log.info("SAM2 %s from %s on %s", found.name, source, device)
    graphs = uses_cuda_graphs(device, compiled, settings.compile_mode, settings.compile_backend)
    return LoadedSam2(model=model, variant=found, device=device, random_weights=random_weights, source=source,
                      compiled=tuple(compiled), cuda_graphs=graphs)
