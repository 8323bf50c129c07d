"""Ingest: camera or recording -> normalized, wavelength-tagged frames.

``capture`` is what a source delivers (``Capture``, ``SourceError``); ``formats`` reads capture
files; ``sources`` are the cameras (plugins, the phantom), replays and watched folders;
``calibration`` and ``normalize`` turn a capture into a frame; ``process`` publishes frames.
"""
