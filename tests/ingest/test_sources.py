"""Sources: replay of mixed folders, camera plugins (entry points), the watched folder."""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.ingest.formats import capture_files
from samsa_stream.ingest.formats.envi import write_envi
from samsa_stream.ingest.sources import (
    Capture,
    PhantomCamera,
    ReplaySource,
    Source,
    SourceError,
    WatchFolderSource,
    make_source,
    plugins,
    watch,
)
from samsa_stream.node import wait_until
from samsa_stream.settings import IngestSettings

from .builders import write_tivita

WL = np.array([500.0, 600.0, 700.0])


def _envi(path: Path, value: float) -> Path:
    write_envi(path, np.full((2, 3, 3), value, np.float32), WL)
    return path


def test_replay_of_a_mixed_folder_skips_a_bad_file_and_goes_on(tmp_path: Path) -> None:
    _envi(tmp_path / "a.hdr", 0.1)
    (tmp_path / "b.hdr").write_text("ENVI\nsamples = 3\n")
    write_tivita(tmp_path / "c_SpecCube.dat", np.full((2, 3, 4), 0.3, np.float32))
    np.savez(tmp_path / "d.npz", cube=np.full((2, 3, 3), 0.4, np.float32), wavelengths_nm=WL)
    items = list(make_source(IngestSettings(source=str(tmp_path))).captures())
    assert isinstance(items[1], SourceError) and "b.hdr: required field 'lines' is missing" in str(items[1])
    assert [float(c.cube[0, 0, 0]) for c in items if isinstance(c, Capture)] == pytest.approx([0.1, 0.3, 0.4])


def test_phantom_is_a_plugin_by_bare_name_or_prefix() -> None:
    for name in ("phantom", "plugin:phantom"):
        source = make_source(IngestSettings(source=name, frames=2))
        assert isinstance(source, PhantomCamera)
        assert len(list(source.captures())) == 2
    assert "phantom" in plugins.plugin_names()


class _FakeCamera(Source):
    name = "fake"

    def __init__(self, gain: float) -> None:
        self.gain = gain

    def captures(self):
        yield Capture(cube=np.full((2, 2, 3), self.gain, np.float32), wavelengths_nm=WL)


def fake_camera(settings: IngestSettings) -> Source:
    return _FakeCamera(float(settings.plugin_options.get("gain", 0.5)))


def not_a_source(settings: IngestSettings) -> object:
    return 42


def _entry_points(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    eps = [EntryPoint(name=n, value=v, group=plugins.ENTRY_POINT_GROUP) for n, v in targets.items()]
    monkeypatch.setattr(plugins, "entry_points", lambda group: [e for e in eps if e.group == group])


def test_an_installed_plugin_is_found_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    _entry_points(monkeypatch, acme=f"{__name__}:fake_camera")
    source = make_source(IngestSettings(source="plugin:acme", plugin_options={"gain": 0.25}))
    (capture,) = list(source.captures())
    assert capture.cube[0, 0, 0] == 0.25
    assert plugins.plugin_names() == ["acme", "phantom"]


@pytest.mark.parametrize("target,message", [
    ("no_such_module_xyz:camera",
     "camera plugin 'acme' (no_such_module_xyz:camera) cannot be loaded: ModuleNotFoundError"),
    (f"{__name__}:not_a_source", "camera plugin 'acme' returned int, not a Source"),
    (f"{__name__}:WL", "is not callable; expected a factory"),
])
def test_broken_plugins_are_named(monkeypatch: pytest.MonkeyPatch, target: str, message: str) -> None:
    _entry_points(monkeypatch, acme=target)
    with pytest.raises(SourceError) as err:
        make_source(IngestSettings(source="plugin:acme"))
    assert message in str(err.value)


def test_unknown_plugin_lists_the_known_ones() -> None:
    with pytest.raises(SourceError, match="camera plugin 'nope' is not installed \\(known: phantom"):
        make_source(IngestSettings(source="plugin:nope"))


def test_missing_replay_path() -> None:
    with pytest.raises(SourceError, match="replay source /no/such/capture: no such file or folder"):
        make_source(IngestSettings(source="/no/such/capture"))


def test_watch_folder_reads_new_complete_captures_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _envi(tmp_path / "old.hdr", 0.9)  # present at start: skipped
    listed = threading.Event()
    incomplete: list[Path] = []

    def spy_listing(folder: Path) -> list[Path]:
        entries = capture_files(folder)
        listed.set()
        return entries

    real_signature = watch.capture_signature

    def spy_signature(entry: Path) -> watch.Signature | None:
        signature = real_signature(entry)
        if signature is None:
            incomplete.append(entry)
        return signature

    monkeypatch.setattr(watch, "capture_files", spy_listing)
    monkeypatch.setattr(watch, "capture_signature", spy_signature)
    stop = threading.Event()
    source = make_source(IngestSettings(source=str(tmp_path), watch=True, watch_poll_s=0.01, watch_settle_s=0.05),
                         stop=stop)
    assert isinstance(source, WatchFolderSource)
    got: list[Capture | SourceError] = []

    def consume() -> None:
        for item in source.captures():
            got.append(item)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert listed.wait(10)  # the captures present at start are known: what follows is new
    # A header whose data file has not arrived yet is waited for, not reported as broken.
    (tmp_path / "new.hdr").write_text((tmp_path / "old.hdr").read_text())
    assert wait_until(lambda: incomplete.count(tmp_path / "new.hdr") >= 3, 10)
    assert got == []
    (tmp_path / "bad.npz").write_bytes(b"junk")  # first, so it settles no later than new.hdr
    (tmp_path / "new.img").write_bytes(np.full((3, 2, 3), 0.2, "<f4").tobytes())
    assert wait_until(lambda: len(got) >= 2, 10)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(got[0], SourceError) and "bad.npz" in str(got[0])
    assert isinstance(got[1], Capture) and got[1].cube[0, 0, 0] == pytest.approx(0.2)
    assert len(got) == 2


def test_watch_existing_and_not_a_folder(tmp_path: Path) -> None:
    _envi(tmp_path / "old.hdr", 0.9)
    stop = threading.Event()
    source = WatchFolderSource(tmp_path, poll_s=0.01, settle_s=0.0, existing=True, stop=stop)
    first = next(source.captures())
    stop.set()
    assert isinstance(first, Capture)
    with pytest.raises(SourceError, match="old.hdr: not a folder"):
        WatchFolderSource(tmp_path / "old.hdr")


def test_replay_loops(tmp_path: Path) -> None:
    _envi(tmp_path / "a.hdr", 0.1)
    items = ReplaySource(tmp_path, loop=True).captures()
    assert all(isinstance(next(items), Capture) for _ in range(3))
