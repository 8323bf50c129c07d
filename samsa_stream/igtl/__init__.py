"""OpenIGTLink bridge (``samsa-stream igtl``): one stream's masks as label maps for navigation displays."""

from .bridge import STATUS_DEVICE, Bridge, run_igtl
from .convert import MAX_LABEL, ijk_to_ras, image_message, label_map, label_message, label_value, status_message
from .server import IgtlServer

__all__ = ["MAX_LABEL", "STATUS_DEVICE", "Bridge", "IgtlServer", "ijk_to_ras", "image_message", "label_map",
           "label_message", "label_value", "run_igtl", "status_message"]
