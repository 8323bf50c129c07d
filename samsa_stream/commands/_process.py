"""Shared start-up of the long-running processes: settings, logging, stop signals, systemd notify, stats file."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from pathlib import Path

from .. import supervision, threads
from ..cli import settings_from
from ..errors import CommandError
from ..metrics import serve_metrics
from ..runtime import ProcessStats, setup_logging, stop_on_signals
from ..settings import Settings

Runner = Callable[[Settings, threading.Event, Path | None], ProcessStats]

# Which thread budget (settings.threads) each process takes: display bridges and the recorder are light, like
# the publisher.
ROLES: dict[str, threads.Role] = {"ingest": "ingest", "worker": "worker", "publisher": "publisher",
                                  "web": "publisher", "igtl": "publisher", "view": "publisher", "record": "publisher"}


def run_process(name: str, args: argparse.Namespace, runner: Runner) -> int:
    """Run ``runner`` until it returns (source ended) or a stop signal arrives; 0 on a clean end.

    Under systemd (``Type=notify``) the runner reports READY=1 once it serves, its loop keeps the
    watchdog fed, and STOPPING=1 goes out on the way down (``supervision``). With ``metrics.listen``
    the process serves its counters, gauges and latencies to Prometheus (``metrics``)."""
    settings = settings_from(args)
    stats_file: Path | None = args.stats_file
    if stats_file is not None and not stats_file.parent.is_dir():  # found now, not hours later at exit
        raise CommandError(f"--stats-file {stats_file}: folder {stats_file.parent} does not exist")
    setup_logging(settings.log.level, name, settings.log.format)
    threads.configure(threads.threads_for(settings.threads, ROLES.get(name, "tools")))
    stop = stop_on_signals()
    notifier = supervision.Notifier.from_environment()
    notifier.freeze_heap = True  # this process is the runner's alone
    supervision.install(notifier)
    try:
        with serve_metrics(settings):  # nothing unless metrics.listen is set
            runner(settings, stop, stats_file)
    finally:
        notifier.stopping()
        supervision.install(None)
    return 0
