"""Frame sources: camera plugins (the synthetic phantom among them), replay of recorded captures,
and a watched folder that a camera writes captures into."""

from __future__ import annotations

import threading
from pathlib import Path

from ...settings import IngestSettings
from .base import Capture, Source, SourceError
from .phantom import PhantomCamera
from .replay import ReplaySource
from .watch import WatchFolderSource

PLUGIN_PREFIX = "plugin:"


def make_source(settings: IngestSettings, stop: threading.Event | None = None) -> Source:
    """The source named by ``settings.source``:

    - ``plugin:NAME``, or a bare plugin name such as ``phantom`` that is not an existing path:
      the camera plugin (ingest.plugins);
    - a folder with ``settings.watch``: each new capture written into it;
    - a file or folder: a replay of its captures.

    ``stop`` ends a watched folder's wait for new files; pass the process's stop event.
    Raises SourceError when the source cannot be opened.
    """
    from .. import formats, plugins  # both import this package's modules

    source = settings.source
    if source.startswith(PLUGIN_PREFIX):
        return plugins.open_plugin(source[len(PLUGIN_PREFIX):], settings)
    path = Path(source)
    if not path.exists() and source in plugins.plugin_names():
        return plugins.open_plugin(source, settings)
    options = formats.ReadOptions.from_settings(settings)
    if settings.watch:
        return WatchFolderSource(path, options, poll_s=settings.watch_poll_s, settle_s=settings.watch_settle_s,
                                 existing=settings.watch_existing, stop=stop)
    return ReplaySource(path, loop=settings.loop, options=options)


__all__ = ["Capture", "PhantomCamera", "ReplaySource", "Source", "SourceError", "WatchFolderSource", "make_source"]
