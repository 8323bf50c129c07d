"""Pure conversions from broadcast messages to OpenIGTLink messages (docs/igtl.md).

Label values: an object's value in the uint8 label map is its id for ids 1..255; a larger id wraps
around, ``(id - 1) mod 255 + 1`` (256 -> 1, 510 -> 255, 511 -> 1), so it may share a value with a
smaller id. 0 is background. Where masks overlap, the object later in the message wins: the
publisher's overlay draws them in the same order, so the label map and the overlay agree.

Geometry: a frame is one slice. Column index -> I, row index -> J (row 0 at the top), K = 0. The
IJK-to-RAS matrix is ``diag(spacing_mm)`` with ``origin_mm`` as its translation, so pixel (row r,
column c) lies at RAS (origin_x + c * spacing_x, origin_y + r * spacing_y, origin_z) mm. A negative
spacing points that axis the other way (x and y negative: upright in Slicer's axial view).

Time: every image carries its frame's capture time (``capture_ns``) as the OpenIGTLink timestamp,
so a client tells which frame a label map shows by it (the 64-bit timestamp is exact to well under
a microsecond; frames are milliseconds apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyigtl

from ..errors import ProtocolError
from ..protocol import ObjectMask

MAX_LABEL = 255  # uint8 label map: 0 is background, 1..255 objects


def label_value(object_id: int) -> int:
    """The label map value of object ``object_id`` (>= 1): the id itself up to 255, then wrapped into 1..255."""
    if object_id < 1:
        raise ProtocolError(f"object id must be 1 or more, got {object_id}")
    return (object_id - 1) % MAX_LABEL + 1


def label_map(objects: Sequence[ObjectMask], size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) label map of ``objects``' masks: 0 outside every mask, ``label_value(object_id)`` inside;
    where masks overlap the later object wins. Raises ProtocolError for a mask that is not ``size``."""
    out = np.zeros(size, dtype=np.uint8)
    for obj in objects:
        if obj.mask.shape != tuple(size):
            raise ProtocolError(f"object {obj.object_id}: mask is {obj.mask.shape[0]} x {obj.mask.shape[1]}, "
                                f"the frame is {size[0]} x {size[1]}")
        out[np.asarray(obj.mask, dtype=bool)] = label_value(obj.object_id)
    return out


def ijk_to_ras(spacing_mm: Sequence[float], origin_mm: Sequence[float]) -> np.ndarray:
    """4 x 4 IJK-to-RAS matrix: axis-aligned, ``spacing_mm`` (x, y, z) on the diagonal (its sign is the axis'
    direction), ``origin_mm`` the position of pixel (row 0, column 0). Raises ProtocolError for a spacing
    that is zero or not finite, or an origin that is not finite."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    origin = np.asarray(origin_mm, dtype=np.float64)
    if spacing.shape != (3,) or origin.shape != (3,):
        raise ProtocolError(f"spacing and origin need 3 values (x, y, z), got {spacing.size} and {origin.size}")
    if not (np.all(np.isfinite(spacing)) and np.all(spacing != 0) and np.all(np.isfinite(origin))):
        raise ProtocolError(f"spacing must be finite and not zero, origin finite; got spacing {spacing.tolist()}, "
                            f"origin {origin.tolist()}")
    matrix = np.diag([*spacing, 1.0])
    matrix[:3, 3] = origin
    return matrix


def image_message(image: np.ndarray, device: str, capture_ns: int, ijk_to_world: np.ndarray) -> pyigtl.ImageMessage:
    """An OpenIGTLink IMAGE of one frame: ``image`` (H, W) scalar or (H, W, C) components, uint8; the
    timestamp is the capture time; RAS coordinates."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ProtocolError(f"image for {device} must be uint8 (H, W) or (H, W, C), got {image.dtype} {image.shape}")
    # pyigtl takes (k, j, i[, component]) arrays: one slice, rows -> J, columns -> I.
    voxels = np.ascontiguousarray(image[np.newaxis])
    return pyigtl.ImageMessage(voxels, ijk_to_world_matrix=ijk_to_world, world_coordinate_system="ras",
                               timestamp=capture_ns / 1e9, device_name=device)


def label_message(objects: Sequence[ObjectMask], size: tuple[int, int], capture_ns: int, device: str,
                  ijk_to_world: np.ndarray) -> pyigtl.ImageMessage:
    """The label map of one mask message as an OpenIGTLink IMAGE (uint8, one component)."""
    return image_message(label_map(objects, size), device, capture_ns, ijk_to_world)


def status_message(text: str, device: str, now_ns: int) -> pyigtl.StringMessage:
    """A STRING message telling clients whether the label maps are live (pyigtl has no STATUS message)."""
    return pyigtl.StringMessage(text, timestamp=now_ns / 1e9, device_name=device)


__all__ = ["MAX_LABEL", "ijk_to_ras", "image_message", "label_map", "label_message", "label_value", "status_message"]
