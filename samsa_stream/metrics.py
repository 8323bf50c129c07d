"""Prometheus metrics of a process: what its ``ProcessStats`` hold, plus memory, descriptors and GPU memory.

Off unless ``metrics.listen`` is set. Names and labels are listed in docs/metrics.md:

- every counter ``c`` of a ``ProcessStats`` is ``samsa_<c>_total{process=...}``;
- every gauge ``g`` (and every number in its ``info``) is ``samsa_<g>{process=...}``;
- every latency ``s`` given to ``observe`` (ms) is the histogram ``samsa_latency_seconds{process, stage=s}``;
- ``samsa_uptime_seconds``, ``samsa_process_info`` (text and yes/no ``info`` entries as labels);
- ``process_*`` (resident memory, open descriptors, CPU) from prometheus_client's process collector;
- ``samsa_gpu_memory_{allocated,reserved}_bytes{device}`` once this process has initialised CUDA.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .errors import TransportError
from .runtime import ProcessStats, shorten
from .settings import Settings

log = logging.getLogger(__name__)

PREFIX = "samsa_"
MAX_LABEL_CHARS = 200  # an info text as a label value stays a label, not a document

StatsSource = Callable[[], Iterable[ProcessStats]]


def metric_name(name: str) -> str:
    """A ``ProcessStats`` name as a Prometheus name part: anything but ``[A-Za-z0-9_]`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


class StatsCollector(Collector):
    """Reads ``ProcessStats`` on each scrape (``source`` lists them); stats of the same process are added up."""

    def __init__(self, source: StatsSource = ProcessStats.live) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        figures = _Figures()
        for stats in self.source():
            figures.add(stats)
        for name, per_process in sorted(figures.counters.items()):
            yield _per_process(CounterMetricFamily(f"{PREFIX}{name}", f"{name} counted by the process "
                                                   "(docs/metrics.md)", labels=["process"]), per_process)
        for name, per_process in sorted(figures.gauges.items()):
            if name not in figures.counters:  # one name, one family: the counter keeps it
                yield _per_process(GaugeMetricFamily(f"{PREFIX}{name}", f"{name} now (docs/metrics.md)",
                                                     labels=["process"]), per_process)
        if figures.histograms:
            hist = HistogramMetricFamily(f"{PREFIX}latency_seconds",
                                         "latency of a stage, or from capture to a point of the pipeline",
                                         labels=["process", "stage"])
            for (process, stage), (counts, total_ms) in sorted(figures.histograms.items()):
                hist.add_metric([process, stage], _cumulative(counts), sum_value=total_ms / 1000)
            yield hist
        if figures.uptime:
            yield _per_process(GaugeMetricFamily(f"{PREFIX}uptime_seconds", "seconds since the process's stats "
                                                 "began", labels=["process"]), figures.uptime)
            described = InfoMetricFamily(f"{PREFIX}process", "what the process is (engine, source, address)")
            for process, labels in sorted(figures.info.items()):
                described.add_metric([], {**labels, "process": process})
            yield described


class _Figures:
    """What one scrape read, per metric name and process."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[str, float]] = {}
        self.gauges: dict[str, dict[str, float]] = {}
        self.histograms: dict[tuple[str, str], tuple[list[int], float]] = {}
        self.uptime: dict[str, float] = {}
        self.info: dict[str, dict[str, str]] = {}
        self.now = time.monotonic()

    def add(self, stats: ProcessStats) -> None:
        process = stats.process
        # Copies first: the process keeps counting in its own thread while this one reads.
        for name, count in dict(stats.counters).items():
            into = self.counters.setdefault(metric_name(name), {})
            into[process] = into.get(process, 0.0) + count
        levels: dict[str, float] = {k: float(v) for k, v in dict(stats.info).items()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
        levels.update(dict(stats.gauges))
        for name, level in levels.items():
            self.gauges.setdefault(metric_name(name), {})[process] = float(level)
        for name, buckets in dict(stats.latency_buckets).items():
            counts = list(buckets)
            before, before_ms = self.histograms.get((process, name), ([0] * len(counts), 0.0))
            self.histograms[(process, name)] = ([a + b for a, b in zip(before, counts, strict=True)],
                                                before_ms + stats.latency_total_ms.get(name, 0.0))
        self.uptime[process] = max(self.uptime.get(process, 0.0), round(self.now - stats.started, 3))
        self.info.setdefault(process, {}).update(_info_labels(stats.info))


def _per_process(family: CounterMetricFamily | GaugeMetricFamily,
                 values: dict[str, float]) -> CounterMetricFamily | GaugeMetricFamily:
    for process, value in sorted(values.items()):
        family.add_metric([process], value)
    return family


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (``ProcessStats.latency_buckets``) as Prometheus's cumulative ``le`` buckets in seconds."""
    out: list[tuple[str, float]] = []
    running = 0.0
    for bound_ms, n in zip((*ProcessStats.LATENCY_BUCKETS_MS, float("inf")), counts, strict=True):
        running += n
        out.append((floatToGoString(bound_ms / 1000), running))
    return out


def _info_labels(info: dict[str, Any]) -> dict[str, str]:
    """The text and yes/no entries of ``info`` as labels (numbers are gauges, lists and tables are left out)."""
    out: dict[str, str] = {}
    for key, value in dict(info).items():
        if isinstance(value, bool):
            out[metric_name(key)] = "true" if value else "false"
        elif isinstance(value, str):
            out[metric_name(key)] = shorten(value, MAX_LABEL_CHARS)
    out.pop("process", None)
    return out


class GpuMemoryCollector(Collector):
    """CUDA memory of this process per device, once it has initialised CUDA; never imports or starts torch."""

    def collect(self) -> Iterator[Metric]:
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        if cuda is None or not cuda.is_initialized():
            return
        allocated = GaugeMetricFamily(f"{PREFIX}gpu_memory_allocated_bytes",
                                      "GPU memory held by this process's tensors", labels=["device"])
        reserved = GaugeMetricFamily(f"{PREFIX}gpu_memory_reserved_bytes",
                                     "GPU memory reserved by this process's caching allocator", labels=["device"])
        for device in range(cuda.device_count()):
            allocated.add_metric([str(device)], float(cuda.memory_allocated(device)))
            reserved.add_metric([str(device)], float(cuda.memory_reserved(device)))
        yield allocated
        yield reserved


def metrics_registry(source: StatsSource = ProcessStats.live) -> CollectorRegistry:
    """A registry of everything a process exports: its stats, ``process_*`` figures and GPU memory."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(source))
    ProcessCollector(registry=registry)
    registry.register(GpuMemoryCollector())
    return registry


class MetricsServer:
    """``/metrics`` served over HTTP in a daemon thread until ``close()`` (also a context manager)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        try:
            self._httpd, self._thread = start_http_server(port, host, registry)
        except OSError as exc:  # port in use, address not on this host, no permission
            raise TransportError(f"metrics.listen {host}:{port}: cannot serve metrics there: {exc.strerror or exc}"
                                 " (each process of a host needs its own port, see docs/metrics.md)") from exc
        self.host = host
        self.port: int = self._httpd.server_port
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Off:
    """What ``serve_metrics`` returns when ``metrics.listen`` is not set: nothing to close."""

    url = None

    def close(self) -> None:
        pass

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as host and port."""
    host, _, port = listen.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def serve_metrics(settings: Settings, stats: Iterable[ProcessStats] | None = None) -> MetricsServer | _Off:
    """Serve ``/metrics`` on ``settings.metrics.listen`` until closed; does nothing when it is not set.

    By default every ``ProcessStats`` this process creates, before or after this call, is exported;
    pass ``stats`` to export only those. A port already in use raises ``TransportError`` now."""
    if settings.metrics.listen is None:
        return _Off()
    host, port = split_listen(settings.metrics.listen)
    chosen = None if stats is None else list(stats)
    server = MetricsServer(host, port, metrics_registry(ProcessStats.live if chosen is None else lambda: chosen))
    log.info("metrics on %s", server.url)
    return server


__all__ = ["GpuMemoryCollector", "MetricsServer", "StatsCollector", "metric_name", "metrics_registry",
           "serve_metrics", "split_listen"]
