"""Shared start-up of the long-running processes: settings, logging, stop signals, stats file."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from pathlib import Path

from ..cli import settings_from
from ..runtime import ProcessStats, setup_logging, stop_on_signals
from ..settings import Settings

Runner = Callable[[Settings, threading.Event, Path | None], ProcessStats]


def run_process(name: str, args: argparse.Namespace, runner: Runner) -> int:
    settings = settings_from(args)
    setup_logging(settings.log.level, name)
    stop = stop_on_signals()
    runner(settings, stop, args.stats_file)
    return 0
