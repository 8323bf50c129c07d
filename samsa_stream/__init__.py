"""samsa-stream: real-time hyperspectral segmentation node (SAMSA) for the operating room.

Pipeline: ingest -> worker -> publisher -> displays, as separate processes over ZeroMQ.
"""

__version__ = "0.1.0"
