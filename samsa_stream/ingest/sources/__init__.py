"""Frame sources: camera plugins (the synthetic phantom among them), replay of recorded captures,
and a watched folder that a camera writes captures into."""

from __future__ import annotations

import threading
from pathlib import Path

from ...settings import IngestSettings
from ..capture import Capture, SourceError
from ..formats import ReadOptions
from .base import Source
from .phantom import PhantomCamera
from .plugins import open_plugin, plugin_names
from .replay import ReplaySource
from .watch import WatchFolderSource

PLUGIN_PREFIX = "plugin:"


def make_source(settings: IngestSettings, stop: threading.Event | None = None) -> Source:
    """The source named by ``settings.source``:

    - ``plugin:NAME``, or a bare plugin name such as ``phantom`` that is not an existing path:
      the camera plugin (sources.plugins);
    - a folder with ``settings.watch``: each new capture written into it;
    - a file or folder: a replay of its captures.

    ``stop`` ends a watched folder's wait for new files; pass the process's stop event.
    Raises SourceError when the source cannot be opened.
    """
    source = settings.source
    if source.startswith(PLUGIN_PREFIX):
        return open_plugin(source[len(PLUGIN_PREFIX):], settings)
    path = Path(source)
    if not path.exists() and source in plugin_names():
        return open_plugin(source, settings)
    options = ReadOptions.from_settings(settings)
    if settings.watch:
        return WatchFolderSource(path, options, poll_s=settings.watch_poll_s, settle_s=settings.watch_settle_s,
                                 existing=settings.watch_existing, stop=stop)
    return ReplaySource(path, loop=settings.loop, options=options)


__all__ = ["Capture", "PhantomCamera", "ReplaySource", "Source", "SourceError", "WatchFolderSource", "make_source"]
