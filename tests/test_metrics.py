"""Prometheus metrics: a process's ProcessStats scraped over HTTP and parsed as Prometheus would."""

from __future__ import annotations

import gc
import math
import socket
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from samsa_stream.errors import TransportError
from samsa_stream.metrics import MetricsServer, metrics_registry, serve_metrics, split_listen
from samsa_stream.node import LocalNode, free_tcp_port, wait_until
from samsa_stream.runtime import ProcessStats
from samsa_stream.settings import Settings

PROCESS_FILE = Path(__file__).resolve().parents[1] / "samsa_stream" / "commands" / "_process.py"


def scrape(url: str) -> dict[str, list[Sample]]:
    """Every sample of ``url``, by family name (counters without ``_total``, as the parser names them)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples in {samples}"
    return found[0]


class Served:
    """A metrics server on a free loopback port that exports only the ``ProcessStats`` in ``stats``."""

    def __init__(self) -> None:
        self.stats: list[ProcessStats] = []
        self.server = MetricsServer("127.0.0.1", 0, metrics_registry(lambda: self.stats))
        self.url = self.server.url


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    served = Served()  # one for the module: stopping a server takes up to half a second
    with served.server:
        yield served


@pytest.fixture
def serve(served: Served) -> Iterator[Served]:
    served.stats.clear()
    yield served
    served.stats.clear()


def test_counters_gauges_and_info_are_served_with_the_process_label(serve: Served) -> None:
    worker = ProcessStats("worker")
    worker.count("frames_processed", 41)
    worker.count("frames_processed")
    worker.error("prompts_rejected", "stream cam0: no such object")
    worker.gauge("streams", 2)
    worker.info.update(engine="samsa", shared_memory=True, source={"source": "phantom"})
    view = ProcessStats("view")
    view.count("masks_missed", 3)
    view.info["clients"] = 4  # a number in info is a level as well
    serve.stats += [worker, view]

    families = scrape(serve.url)

    assert serve.url == f"http://127.0.0.1:{serve.server.port}/metrics"
    assert value(families["samsa_frames_processed"], "samsa_frames_processed_total", process="worker") == 42
    assert value(families["samsa_prompts_rejected"], "samsa_prompts_rejected_total", process="worker") == 1
    assert value(families["samsa_masks_missed"], "samsa_masks_missed_total", process="view") == 3
    assert [s.labels["process"] for s in families["samsa_masks_missed"]] == ["view"]
    assert value(families["samsa_streams"], "samsa_streams", process="worker") == 2
    assert value(families["samsa_clients"], "samsa_clients", process="view") == 4
    assert value(families["samsa_uptime_seconds"], "samsa_uptime_seconds", process="worker") >= 0
    info = [s.labels for s in families["samsa_process_info"] if s.labels["process"] == "worker"]
    assert info == [{"process": "worker", "engine": "samsa", "shared_memory": "true"}]  # tables left out


def test_latencies_in_ms_become_a_histogram_in_seconds(serve: Served) -> None:
    stats = ProcessStats("worker")
    for ms in (0.5, 1.0, 7.0, 300.0, 20_000.0, float("nan")):  # 1.0 ms lies in le=0.001; NaN in no bucket
        stats.observe("segment", ms)
    stats.observe("capture_to_worker_out", 40.0)
    serve.stats.append(stats)

    samples = scrape(serve.url)["samsa_latency_seconds"]

    buckets = {s.labels["le"]: s.value for s in samples
               if s.name == "samsa_latency_seconds_bucket" and s.labels["stage"] == "segment"}
    assert buckets == {"0.001": 2, "0.0025": 2, "0.005": 2, "0.01": 3, "0.025": 3, "0.05": 3, "0.1": 3,
                       "0.25": 3, "0.5": 4, "1.0": 4, "2.5": 4, "5.0": 4, "10.0": 4, "+Inf": 5}
    assert value(samples, "samsa_latency_seconds_count", process="worker", stage="segment") == 5
    assert value(samples, "samsa_latency_seconds_sum", process="worker", stage="segment") == pytest.approx(20.3085)
    assert value(samples, "samsa_latency_seconds_bucket", stage="capture_to_worker_out", le="0.025") == 0
    assert value(samples, "samsa_latency_seconds_bucket", stage="capture_to_worker_out", le="0.05") == 1


def test_stats_of_one_process_are_added_up_and_names_made_valid(serve: Served) -> None:
    first, second = ProcessStats("record"), ProcessStats("record")
    first.count("frames-dropped/x", 2)
    second.count("frames-dropped/x", 5)
    first.observe("write", 3.0)
    second.observe("write", 4.0)
    serve.stats += [first, second]

    families = scrape(serve.url)

    assert value(families["samsa_frames_dropped_x"], "samsa_frames_dropped_x_total", process="record") == 7
    assert value(families["samsa_latency_seconds"], "samsa_latency_seconds_count", stage="write") == 2
    assert value(families["samsa_latency_seconds"], "samsa_latency_seconds_sum", stage="write") == pytest.approx(0.007)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process_* figures are read from /proc")
def test_memory_and_descriptors_of_the_process_are_served(serve: Served) -> None:
    families = scrape(serve.url)

    assert value(families["process_resident_memory_bytes"], "process_resident_memory_bytes") > 1e6
    assert value(families["process_open_fds"], "process_open_fds") >= 3
    assert "samsa_latency_seconds" not in families  # nothing observed, no empty family


def test_serve_metrics_exports_every_live_stats_until_it_is_collected() -> None:
    port = free_tcp_port()
    with serve_metrics(Settings(metrics={"listen": f"127.0.0.1:{port}"})) as server:
        assert server.url == f"http://127.0.0.1:{port}/metrics"
        stats = ProcessStats("metrics-test-live")  # created after the server started, as a process's run does
        stats.count("frames_sent", 9)
        assert value(scrape(server.url)["samsa_frames_sent"], "samsa_frames_sent_total",
                     process="metrics-test-live") == 9
        del stats
        gc.collect()
        left = scrape(server.url).get("samsa_frames_sent", [])
        assert all(s.labels["process"] != "metrics-test-live" for s in left)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_serve_metrics_is_off_unless_listen_is_set() -> None:
    with serve_metrics(Settings()) as server:
        assert server.url is None


def test_a_port_in_use_is_a_clear_error_at_start_up() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TransportError, match=f"metrics.listen 127.0.0.1:{port}: .*in use"):
            serve_metrics(Settings(metrics={"listen": f"127.0.0.1:{port}"}))


def test_listen_addresses_split_into_host_and_port() -> None:
    assert split_listen("127.0.0.1:9812") == ("127.0.0.1", 9812)
    assert split_listen("[::1]:9812") == ("::1", 9812)
    assert split_listen("0.0.0.0:9811") == ("0.0.0.0", 9811)


def test_snapshot_carries_gauges_and_buckets_count_each_observation_once() -> None:
    stats = ProcessStats("worker")
    stats.gauge("objects", 3)
    stats.gauge("objects", 1)  # a level is replaced, not added
    for ms in (0.2, 1.0, 1.1, 10_000.0, 10_000.1):
        stats.observe("segment", ms)

    assert stats.snapshot()["gauges"] == {"objects": 1}
    assert stats.latency_buckets["segment"] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert stats.latency_total_ms["segment"] == pytest.approx(20_002.4)


class _FakeCuda:
    def __init__(self, initialized: bool) -> None:
        self.initialized = initialized

    def is_initialized(self) -> bool:
        return self.initialized

    def device_count(self) -> int:
        return 2

    def memory_allocated(self, device: int) -> int:
        return 1000 * (device + 1)

    def memory_reserved(self, device: int) -> int:
        return 4096 * (device + 1)


def test_gpu_memory_is_served_once_the_process_has_initialised_cuda(serve: Served,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=_FakeCuda(initialized=False)))
    assert "samsa_gpu_memory_allocated_bytes" not in scrape(serve.url)  # CUDA never started: not started by a scrape

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=_FakeCuda(initialized=True)))
    families = scrape(serve.url)

    allocated = families["samsa_gpu_memory_allocated_bytes"]
    assert {s.labels["device"]: s.value for s in allocated} == {"0": 1000, "1": 2000}
    assert value(families["samsa_gpu_memory_reserved_bytes"], "samsa_gpu_memory_reserved_bytes", device="1") == 8192


def test_gpu_memory_of_real_tensors(serve: Served) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    block = torch.empty(1 << 20, dtype=torch.uint8, device="cuda:0")
    samples = scrape(serve.url)["samsa_gpu_memory_allocated_bytes"]
    assert value(samples, "samsa_gpu_memory_allocated_bytes", device="0") >= block.numel()


# -- real processes: these run once samsa_stream/commands/_process.py starts serve_metrics ---------------------
wired = pytest.mark.skipif("metrics" not in PROCESS_FILE.read_text(),
                           reason="run_process in samsa_stream/commands/_process.py does not start serve_metrics yet")


def _answers(url: str) -> dict[str, list[Sample]] | None:
    try:
        return scrape(url)
    except (urllib.error.URLError, ConnectionError):
        return None


@wired
def test_a_running_ingest_serves_its_counters(tmp_path: Path) -> None:
    port = free_tcp_port()
    overrides = {"metrics": {"listen": f"127.0.0.1:{port}"},
                 "ingest": {"fps": 50.0, "phantom": {"height": 60, "width": 80, "bands": 24}}}
    url = f"http://127.0.0.1:{port}/metrics"
    with LocalNode(overrides, run_dir=tmp_path) as node:
        node.start("ingest")

        def captured() -> bool:
            families = _answers(url)
            return families is not None and "samsa_frames_captured" in families

        assert wait_until(captured, timeout=30, interval=0.1), node.log_text("ingest")[-3000:]
        families = scrape(url)
        assert value(families["samsa_frames_captured"], "samsa_frames_captured_total", process="ingest") >= 1
        assert value(families["process_resident_memory_bytes"], "process_resident_memory_bytes") > 1e6
        assert math.isfinite(value(families["samsa_uptime_seconds"], "samsa_uptime_seconds", process="ingest"))


@wired
def test_a_process_whose_metrics_port_is_taken_stops_at_start_up(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with LocalNode({"metrics": {"listen": f"127.0.0.1:{port}"}}, run_dir=tmp_path) as node:
            node.start("publisher")
            code = node.wait("publisher", timeout=30)
            assert code not in (None, 0)
            assert f"metrics.listen 127.0.0.1:{port}" in node.log_text("publisher")
