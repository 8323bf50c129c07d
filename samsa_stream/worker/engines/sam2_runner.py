"""One SAM2 image model run the way ``SAM2ImagePredictor`` runs it, split at the seams SAMSA needs.

``embed`` (once per frame) -> ``decode`` (per object and click: prompt encoder + mask decoder,
optionally with additions to the decoder's high-resolution skip features) -> ``upscale``.
Everything stays on the model's device; feature sizes follow the configured image size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import EngineError
from .device import Uploader, graph_step
from .sam2_model import LoadedSam2

# SAM2Transforms' ImageNet normalization and the predictor's low-res logit clamp.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
LOW_RES_CLAMP = 32.0


@dataclass
class ImageFeatures:
    """One frame's SAM2 image embedding, shared by every object and click on it."""

    image_embed: torch.Tensor  # (1, 256, S/16, S/16), no-memory embedding already added
    high_res: tuple[torch.Tensor, torch.Tensor]  # (1, C0, S/4, S/4) and (1, C1, S/8, S/8), projected
    orig_hw: tuple[int, int]


@dataclass
class Decoded:
    """Mask decoder output for one object: M candidate masks (M = 3 multimask, else 1)."""

    low_res_raw: torch.Tensor  # (1, M, S/4, S/4) logits as the decoder produced them
    scores: torch.Tensor  # (1, M) predicted IoU

    @property
    def low_res(self) -> torch.Tensor:
        """Low-res logits clamped like SAM2's predictor does (what goes back in as a mask prompt)."""
        return self.low_res_raw.float().clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)

    def best(self) -> int:
        return int(torch.argmax(self.scores[0]).item())


def check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise EngineError(f"SAM2 needs a uint8 H x W x 3 image, got {rgb.dtype} {rgb.shape}")


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor in ``value`` (a tensor, or lists and tuples of them)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, list | tuple):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


def split_backbone(backbone: dict[str, Any], index: int) -> dict[str, Any]:
    """Frame ``index`` of a batched image-encoder output, as a batch of one."""
    return {key: _map_tensors(value, lambda t: t[index:index + 1]) for key, value in backbone.items()}


class Sam2Runner:
    """The SAM2 model behind the rgb, prompt and decoder engines."""

    def __init__(self, loaded: LoadedSam2) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.image_size = int(self.model.image_size)
        self.mask_size = 4 * int(self.model.sam_image_embedding_size)  # the decoder's low-res output side
        decoder = self.model.sam_mask_decoder
        if not getattr(decoder, "use_high_res_features", False):
            raise EngineError("this SAM2 config does not use high-resolution features in its mask decoder")
        self.high_res_channels = (int(decoder.conv_s0.out_channels), int(decoder.conv_s1.out_channels))
        self._mean = torch.tensor(PIXEL_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(PIXEL_STD, device=self.device).view(1, 3, 1, 1)
        self.uploader = Uploader(self.device)  # pinned, side-stream copies on CUDA; a passthrough on the CPU
        self.embeds = 0  # counters, so callers and tests can see what work was done
        self.decodes = 0
        self.batches = 0  # image-encoder runs on more than one frame

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """bfloat16 autocast on CUDA, nothing on the CPU (float32)."""
        dtype = self.loaded.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> normalized (1, 3, S, S) on the device: the uint8 image is uploaded (pinned and
        non-blocking on CUDA) and converted, resized and normalized there, as SAM2Transforms does on the host."""
        check_rgb(rgb)
        image = self.uploader.upload(rgb)
        x = image.permute(2, 0, 1)[None].float().div(255)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self._mean) / self._std

    @torch.no_grad()
    def forward_image(self, rgb: np.ndarray) -> dict[str, Any]:
        """The image encoder's output for one uint8 (H, W, 3) frame; every use of a frame starts here
        (counted in ``embeds``)."""
        check_rgb(rgb)
        with self.autocast():
            backbone: dict[str, Any] = self.encode(self.preprocess(rgb))
        self.embeds += 1
        return backbone

    def encode(self, batch: torch.Tensor) -> dict[str, Any]:
        """SAM2's ``forward_image`` on a preprocessed batch; with CUDA graphs, its outputs are cloned out of
        the graph's buffers (a frame's embedding is kept past the next frame's run)."""
        if not self.loaded.cuda_graphs:
            return self.model.forward_image(batch)
        graph_step()
        return {key: _map_tensors(value, torch.Tensor.clone) for key, value in self.model.forward_image(batch).items()}

    @torch.no_grad()
    def forward_images(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        """``forward_image`` of each frame, from one image-encoder run on the batch (frames of any sizes:
        each is resized to the input size first). Counted once per frame in ``embeds``."""
        if not images:
            return []
        if len(images) == 1:
            return [self.forward_image(images[0])]
        batch = torch.cat([self.preprocess(rgb) for rgb in images])
        with self.autocast():
            backbone: dict[str, Any] = self.encode(batch)
        self.embeds += len(images)
        self.batches += 1
        return [split_backbone(backbone, i) for i in range(len(images))]

    def features_of(self, backbone: dict[str, Any], orig_hw: tuple[int, int]) -> ImageFeatures:
        """The single-image embedding SAM2's image predictor makes from an image-encoder output."""
        levels = backbone["backbone_fpn"][-self.model.num_feature_levels:]
        top = levels[-1]
        if self.model.directly_add_no_mem_embed:  # as SAM2's image predictor does for single images
            top = top + self.model.no_mem_embed.view(1, -1, 1, 1)
        return ImageFeatures(image_embed=top, high_res=(levels[0], levels[1]), orig_hw=orig_hw)

    def embed(self, rgb: np.ndarray) -> ImageFeatures:
        """The image embedding of one pseudo-RGB frame (the image encoder's only run for that frame)."""
        return self.features_of(self.forward_image(rgb), (int(rgb.shape[0]), int(rgb.shape[1])))

    def decode(self, features: ImageFeatures, points: np.ndarray, labels: np.ndarray,
               mask_logits: torch.Tensor | None = None, multimask: bool = False,
               high_res_delta: tuple[torch.Tensor, torch.Tensor] | None = None) -> Decoded:
        """Prompt encoder + mask decoder for one object.

        ``points`` (N, 2) are (x = column, y = row) in original image pixels, ``labels`` (N,) 1/0;
        ``mask_logits`` (1, 1, S/4, S/4) is a dense mask prompt; ``high_res_delta`` is added to the
        decoder's 1/4 and 1/8 skip features. Differentiable in ``high_res_delta`` (call under
        ``torch.no_grad()`` for inference).
        """
        h, w = features.orig_hw
        coords = torch.as_tensor(np.asarray(points, dtype=np.float32).reshape(-1, 2), device=self.device)
        # Same float operations as SAM2Transforms.transform_coords, so results match the predictor.
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / w
        coords[..., 1] = coords[..., 1] / h
        coords = coords * self.image_size
        point_labels = torch.as_tensor(np.asarray(labels).reshape(-1), dtype=torch.int, device=self.device)
        high_res = features.high_res
        if high_res_delta is not None:
            high_res = (high_res[0] + high_res_delta[0], high_res[1] + high_res_delta[1])
        with self.autocast():
            sparse, dense = self.model.sam_prompt_encoder(
                points=(coords[None], point_labels[None]), boxes=None,
                masks=None if mask_logits is None else mask_logits.float())
            low_res, scores, _, _ = self.model.sam_mask_decoder(
                image_embeddings=features.image_embed, image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask, repeat_image=False, high_res_features=list(high_res))
        self.decodes += 1
        return Decoded(low_res_raw=low_res, scores=scores.float())

    def upscale(self, low_res_raw: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        """(1, M, S/4, S/4) decoder logits -> (M, H, W) float32 logits at the original image size."""
        return F.interpolate(low_res_raw.float(), orig_hw, mode="bilinear", align_corners=False)[0]

    def to_mask_grid(self, image_map: torch.Tensor) -> torch.Tensor:
        """(H, W) map in original pixels -> (1, 1, S/4, S/4) on the decoder's low-res grid (the image is
        stretched to S x S, so the grid is too)."""
        return F.interpolate(image_map[None, None].float(), size=(self.mask_size, self.mask_size),
                             mode="bilinear", align_corners=False, antialias=True)
