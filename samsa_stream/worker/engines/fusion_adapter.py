"""SAMSA's learned late fusion: a small network that turns spectral similarity maps into additions
to SAM2's mask-decoder skip features, and its weight file.

Input: positive and negative similarity maps (1, 2, S/4, S/4) on the decoder's low-res grid (one
channel each whatever the camera's band count, so the same weights serve every camera).
Output: (1, C0, S/4, S/4) and (1, C1, S/8, S/8), added to SAM2's projected high-resolution
features (C0 = 32, C1 = 64 for every official model). The output layers start at zero, so an
untrained adapter changes nothing: the decoder engine then equals the rgb engine exactly.

Weight file: ``.safetensors`` (metadata below as JSON strings) or a torch ``.pt`` dict
``{"format", "version", "sam2_variant", "channels", "hidden", "info", "state_dict"}``. ``info`` is
optional: how the weights were made (dataset, shots, seed, steps, validation DICE, ...), a JSON map
kept as written and read back as ``FusionAdapter.info`` (empty for files without it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import EngineError

ADAPTER_FORMAT = "samsa-stream/decoder-adapter"
ADAPTER_VERSION = 1
INPUT_MAPS = 2  # positive and negative similarity


class FusionAdapter(nn.Module):
    """Similarity maps -> additions to the mask decoder's 1/4 and 1/8 skip features. Differentiable."""

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 32) -> None:
        super().__init__()
        self.channels = (int(channels[0]), int(channels[1]))
        self.hidden = int(hidden)
        self.info: dict[str, Any] = {}  # how a loaded adapter was made (the weight file's ``info``)
        self.encode_s0 = nn.Sequential(
            nn.Conv2d(INPUT_MAPS, hidden, 3, padding=1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU())
        self.encode_s1 = nn.Sequential(nn.Conv2d(hidden, 2 * hidden, 3, stride=2, padding=1), nn.GELU())
        self.out_s0 = nn.Conv2d(hidden, self.channels[0], 1)
        self.out_s1 = nn.Conv2d(2 * hidden, self.channels[1], 1)
        for layer in (self.out_s0, self.out_s1):  # zero-init: an untrained adapter is the identity on SAM2
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:  # always: both are built with a bias (Conv2d types it Optional)
                nn.init.zeros_(layer.bias)

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``maps`` (N, 2, S/4, S/4) -> (N, C0, S/4, S/4), (N, C1, S/8, S/8)."""
        if maps.ndim != 4 or maps.shape[1] != INPUT_MAPS:
            raise ValueError(f"adapter input must be N x {INPUT_MAPS} x H x W, got {tuple(maps.shape)}")
        x0 = self.encode_s0(maps)
        return self.out_s0(x0), self.out_s1(self.encode_s1(x0))


def save_adapter(path: str | Path, adapter: FusionAdapter, sam2_variant: str,
                 info: Mapping[str, Any] | None = None) -> None:
    """Write ``adapter``'s weights with the SAM2 variant it was trained with (.safetensors or .pt).

    ``info`` (JSON-serializable: text keys, numbers, text, lists, maps) records how the weights were
    made; ``load_adapter`` gives it back as ``adapter.info`` and ``read_adapter_info`` alone."""
    path = Path(path)
    meta: dict[str, Any] = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, "sam2_variant": sam2_variant,
                            "channels": list(adapter.channels), "hidden": adapter.hidden}
    if info is not None:
        meta["info"] = json.loads(json.dumps(dict(info)))  # fails here, not at load time, on what JSON cannot hold
    state = {k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})
    else:
        torch.save({**meta, "state_dict": state}, path)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise EngineError(f"decoder adapter {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            meta = {k: json.loads(v) for k, v in raw.items()}
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
                raise EngineError(f"decoder adapter {path} holds no 'state_dict' (expected a {ADAPTER_FORMAT} file)")
            meta = {k: v for k, v in data.items() if k != "state_dict"}
            state = data["state_dict"]
    except EngineError:
        raise
    except Exception as exc:  # safetensors/torch/json raise many types for a foreign or truncated file
        raise EngineError(f"decoder adapter {path} is not readable: {exc}") from None
    return meta, state


def load_adapter(path: str | Path, sam2_variant: str, channels: tuple[int, int]) -> FusionAdapter:
    """The adapter in ``path``, checked against the running SAM2 variant and its skip-feature channels."""
    path = Path(path)
    meta, state = _read(path)
    if meta.get("format") != ADAPTER_FORMAT:
        raise EngineError(f"decoder adapter {path} is not a {ADAPTER_FORMAT} file (format {meta.get('format')!r})")
    if meta.get("version") != ADAPTER_VERSION:
        raise EngineError(f"decoder adapter {path} has format version {meta.get('version')!r}; this node reads "
                          f"version {ADAPTER_VERSION}")
    if meta.get("sam2_variant") != sam2_variant:
        raise EngineError(f"decoder adapter {path} was trained with {meta.get('sam2_variant')!r}, but the model is "
                          f"{sam2_variant!r}; use an adapter trained with this SAM2 variant")
    saved_channels = tuple(meta.get("channels") or ())
    if saved_channels != tuple(channels):
        raise EngineError(f"decoder adapter {path} outputs {saved_channels} channels; the model's skip features "
                          f"have {tuple(channels)}")
    adapter = FusionAdapter(channels, hidden=int(meta.get("hidden", 32)))
    adapter.info = _info(path, meta)
    own = adapter.state_dict()
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if bad:
        raise EngineError(f"decoder adapter {path} does not fit the adapter network: {len(bad)} tensor(s) missing, "
                          f"unexpected or reshaped (e.g. {', '.join(bad[:3])})")
    adapter.load_state_dict(state)
    return adapter


def read_adapter_info(path: str | Path) -> dict[str, Any]:
    """What an adapter file records about how it was made (empty when it records nothing), without
    checking it against a model."""
    path = Path(path)
    meta, _ = _read(path)
    if meta.get("format") != ADAPTER_FORMAT:
        raise EngineError(f"decoder adapter {path} is not a {ADAPTER_FORMAT} file (format {meta.get('format')!r})")
    return _info(path, meta)


def _info(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    info = meta.get("info")
    if info is None:
        return {}
    if not isinstance(info, dict):
        raise EngineError(f"decoder adapter {path} has an 'info' entry that is not a map ({type(info).__name__})")
    return info
