"""Shared start-up of the long-running processes: settings, logging, stop signals, stats file."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from pathlib import Path

from ..cli import settings_from
from ..errors import CommandError
from ..runtime import ProcessStats, setup_logging, stop_on_signals
from ..settings import Settings

Runner = Callable[[Settings, threading.Event, Path | None], ProcessStats]


def run_process(name: str, args: argparse.Namespace, runner: Runner) -> int:
    """Run ``runner`` until it returns (source ended) or a stop signal arrives; 0 on a clean end."""
    settings = settings_from(args)
    stats_file: Path | None = args.stats_file
    if stats_file is not None and not stats_file.parent.is_dir():  # found now, not hours later at exit
        raise CommandError(f"--stats-file {stats_file}: folder {stats_file.parent} does not exist")
    setup_logging(settings.log.level, name)
    stop = stop_on_signals()
    runner(settings, stop, stats_file)
    return 0
