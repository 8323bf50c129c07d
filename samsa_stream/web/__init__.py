"""The browser display (``samsa-stream web``): any screen with a browser shows a stream's live masks
and takes clicks as prompts. ``frames`` is the wire format to the page, ``access`` who may view and
prompt, ``feed`` the broadcast thread and the per-page latest-frame slots, ``prompts`` the relay to the
worker, ``server`` the aiohttp application; the page itself is plain HTML/JS/CSS in ``static/``."""

from .server import WebServer, run_web, serving

__all__ = ["WebServer", "run_web", "serving"]
