"""Camera driver plugins: a vendor SDK joins the node as an installed package, without touching it.

A plugin is a factory ``(settings: IngestSettings) -> Source`` published under the Python entry
point group ``samsa_stream.cameras``; its package's pyproject.toml says::

    [project.entry-points."samsa_stream.cameras"]
    acme = "acme_hsi.samsa:camera"      # then: samsa-stream ingest --source plugin:acme

The factory reads its own options from ``settings.plugin_options`` (``--set
ingest.plugin_options.serial=1234``) and returns a Source whose ``captures()`` yields one Capture
per frame (cube H x W x B, wavelengths in nm, "raw" with white/dark references or "reflectance"),
or a SourceError for a frame it could not deliver. The synthetic phantom is the built-in plugin
``phantom``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from ...settings import IngestSettings
from ..capture import SourceError
from .base import Source
from .phantom import PhantomCamera

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "samsa_stream.cameras"
CameraFactory = Callable[[IngestSettings], Source]


def phantom_camera(settings: IngestSettings) -> Source:
    """The synthetic phantom camera (``ingest.phantom`` settings), as a plugin."""
    return PhantomCamera(settings.phantom, frames=settings.frames)


BUILTIN_PLUGINS: dict[str, CameraFactory] = {"phantom": phantom_camera}


def plugin_names() -> list[str]:
    """Every camera plugin name: the built-in ones and those installed packages publish."""
    return sorted(set(BUILTIN_PLUGINS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_plugin(name: str) -> CameraFactory:
    """The factory of plugin ``name``; SourceError when it is unknown or cannot be imported."""
    if name in BUILTIN_PLUGINS:  # built-ins win, so an installed package cannot replace the phantom by accident
        return BUILTIN_PLUGINS[name]
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise SourceError(f"camera plugin {name!r} is not installed (known: {', '.join(plugin_names())}; "
                          f"plugins publish entry points in the group {ENTRY_POINT_GROUP!r})")
    if len(found) > 1:
        log.warning("camera plugin %r is published %d times; using %s", name, len(found), found[0].value)
    try:
        factory = found[0].load()
    except Exception as exc:  # a broken vendor package must not take the node down with a bare traceback
        raise SourceError(f"camera plugin {name!r} ({found[0].value}) cannot be loaded: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not callable(factory):
        raise SourceError(f"camera plugin {name!r} ({found[0].value}) is not callable; expected a factory "
                          "(settings) -> Source")
    return factory


def open_plugin(name: str, settings: IngestSettings) -> Source:
    """Start camera plugin ``name`` with the ingest settings; SourceError naming the plugin on failure."""
    factory = load_plugin(name)
    source = factory(settings)
    if not isinstance(source, Source):
        raise SourceError(f"camera plugin {name!r} returned {type(source).__name__}, not a Source")
    return source
