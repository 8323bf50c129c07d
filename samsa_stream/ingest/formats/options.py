"""What a reader may need to know beyond the file itself (settings the file cannot carry)."""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import IngestSettings


@dataclass(frozen=True)
class ReadOptions:
    """Reader options; ``from_settings`` takes them from the ingest settings."""

    # TIVITA .dat files store no wavelengths: bands are spread evenly from the first to the last value.
    tivita_wavelength_range_nm: tuple[float, float] = (500.0, 1000.0)

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> ReadOptions:
        lo, hi = settings.tivita_wavelength_range_nm
        return cls(tivita_wavelength_range_nm=(lo, hi))
