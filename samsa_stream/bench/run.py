"""One ``bench`` run: the sections asked for, on the same frames, into one report."""

from __future__ import annotations

import datetime
import importlib
import logging
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from .. import __version__, threads
from ..errors import SamsaError
from .options import FRAME_POOL, BenchFrames, BenchOptions
from .report import BenchReport, Section, gather_ratios

log = logging.getLogger(__name__)

SectionRunner = Callable[[BenchOptions, BenchFrames], dict[str, Section]]


def machine() -> dict[str, str | int | float | bool | None]:
    """What the figures were measured on."""
    import torch

    cuda = torch.cuda.is_available()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        memory_gib: float | None = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    return {
        "cpu": model, "cores": os.cpu_count(), "usable_cores": threads.usable_cores(), "threads": threads.configured(),
        "memory_gib": memory_gib, "load_average_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(),
        "numpy": np.__version__, "torch": torch.__version__, "samsa_stream": __version__,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
    }


def section_runner(name: str) -> SectionRunner:
    module = importlib.import_module(f".{name}", __package__)
    runner: SectionRunner = module.run
    return runner


def run_bench(options: BenchOptions, command: str) -> BenchReport:
    """Run every section of ``options`` and gather the report (sections that cannot run say why)."""
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    frames = BenchFrames.make(options.size, FRAME_POOL)
    sections: dict[str, Section] = {}
    for name in options.sections:
        log.info("bench: %s", name)
        try:
            sections.update(section_runner(name)(options, frames))
        except SamsaError as exc:  # a model that does not load, a node that does not start: the rest still runs
            log.error("bench: section %s failed: %s", name, exc)
            sections[name] = Section.skip(name, f"failed: {exc}")
    return BenchReport(command=command, started=stamp, duration_s=round(time.monotonic() - started, 1),
                       machine=machine(), options=options.describe(), sections=sections,
                       ratios=gather_ratios(sections))
