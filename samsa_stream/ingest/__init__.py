"""Ingest: camera or recording -> normalized, wavelength-tagged frames."""
