"""Moving frames onto the model's device, and the optional compilation of SAM2's heavy modules.

On a CUDA device ``Uploader`` copies a host array into a reusable pinned staging buffer, then to the
device with a non-blocking copy on its own CUDA stream; the compute stream waits on the copy's event
only where it uses the tensor. So a frame's cube travels while the image encoder runs, and the next
frames of a batch travel while the first is encoded. On any other device it is a passthrough
(``torch.from_numpy``, no copy). Every CUDA-only call sits behind ``device.type == "cuda"``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .base import EngineError

log = logging.getLogger(__name__)

STAGING_SLOTS = 2  # pinned buffers per shape and dtype: one being copied while the next is filled
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
CompileBackend = Literal["inductor", "aot_eager", "eager"]


@dataclass
class _Slot:
    host: torch.Tensor  # pinned staging buffer
    done: Any  # torch.cuda.Event recorded after the copy out of ``host``; None before the first use


class Uploader:
    """Host arrays -> tensors on ``device`` (see the module doc). ``uploads`` counts the copies made."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.uploads = 0
        self._slots: dict[tuple[tuple[int, ...], torch.dtype], list[_Slot]] = {}
        self._turn: dict[tuple[tuple[int, ...], torch.dtype], int] = {}
        self._stream: Any = None
        if device.type == "cuda":
            self._stream = torch.cuda.Stream(device=device)

    @property
    def overlaps(self) -> bool:
        """Whether copies run on a side stream (a CUDA device) rather than inline."""
        return self._stream is not None

    def upload(self, array: np.ndarray) -> torch.Tensor:
        """``array`` on the device, in its own dtype, safe to use on the current stream (``start(array).get()``).
        On the CPU the tensor shares ``array``'s memory (do not change the array while it is used)."""
        return self.start(array).get()

    def start(self, array: np.ndarray) -> Pending:
        """Begin moving ``array`` to the device; ``get()`` on the result when it is needed. On CUDA the
        copy runs on the side stream meanwhile, overlapping whatever the compute stream does until then."""
        source = host_tensor(array)
        if self._stream is None:
            return Pending(source if self.device.type == "cpu" else source.to(self.device))
        key = (tuple(source.shape), source.dtype)
        slots = self._slots.setdefault(key, [])
        if len(slots) < STAGING_SLOTS:
            slots.append(_Slot(torch.empty(source.shape, dtype=source.dtype, pin_memory=True), None))
        turn = self._turn.get(key, -1) + 1
        self._turn[key] = turn
        slot = slots[turn % len(slots)]
        if slot.done is not None:
            slot.done.synchronize()  # the buffer's last copy must have left before it is overwritten
        slot.host.copy_(source)
        with torch.cuda.stream(self._stream):
            out = slot.host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        slot.done = event
        self.uploads += 1
        return Pending(out, event)


def host_tensor(array: np.ndarray) -> torch.Tensor:
    """``array`` as a CPU tensor sharing its memory (C-contiguous first). Frames from shared memory are
    read-only: torch warns that it cannot mark such a tensor read-only; the engines never write to them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(np.ascontiguousarray(array))


class Pending:
    """A tensor on its way to the device (see ``Uploader.start``)."""

    def __init__(self, tensor: torch.Tensor, event: Any = None) -> None:
        self._tensor = tensor
        self._event = event  # torch.cuda.Event of the copy; None when the tensor is already usable

    def get(self) -> torch.Tensor:
        """The tensor, usable on the current stream: on CUDA that stream waits for the copy (queued, the host
        does not block) and the allocator keeps the tensor's memory until that stream is done with it."""
        if self._event is not None:
            compute = torch.cuda.current_stream(self._tensor.device)
            compute.wait_event(self._event)
            self._tensor.record_stream(compute)
            self._event = None
        return self._tensor


def compile_modules(model: torch.nn.Module, image_encoder: bool, memory_attention: bool, mode: CompileMode,
                    backend: CompileBackend) -> list[str]:
    """Compile SAM2's image encoder and/or memory attention in place (``nn.Module.compile``: parameter
    names and state dicts stay as they were); the names of the modules compiled. Compilation itself
    happens on each module's first call (the worker's warm-up)."""
    compiled = []
    for name, wanted in (("image_encoder", image_encoder), ("memory_attention", memory_attention)):
        if not wanted:
            continue
        module = getattr(model, name, None)
        if not isinstance(module, torch.nn.Module):
            raise EngineError(f"this SAM2 model has no {name} to compile")
        # Shapes that change (batch size, memory length) recompile once as dynamic, not once per size.
        options: dict[str, Any] = {"backend": backend, "dynamic": None}
        if backend == "inductor":
            options["mode"] = mode
        module.compile(**options)
        compiled.append(name)
    if compiled:
        log.info("torch.compile (%s, mode %s) on %s", backend, mode, ", ".join(compiled))
    return compiled


def uses_cuda_graphs(device: torch.device, compiled: list[str] | tuple[str, ...], mode: CompileMode,
                     backend: CompileBackend) -> bool:
    """Whether compiled modules replay CUDA graphs, whose outputs the next replay overwrites (so outputs
    that are kept, such as a frame's embedding, must be cloned)."""
    return (device.type == "cuda" and bool(compiled) and backend == "inductor"
            and mode in ("reduce-overhead", "max-autotune"))


def graph_step() -> None:
    """Tell torch a new inference step begins, so CUDA-graph replays may reuse the last step's outputs."""
    torch.compiler.cudagraph_mark_step_begin()
