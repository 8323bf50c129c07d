"""A state file on a disk that is full or read-only: each failed write is counted (``state_save_failed``,
``track_save_failed``) and said in the reply, the old file stays whole, no temporary file is left
behind, the worker keeps segmenting, and the state is written again once the disk is back: on the next
prompt change, or by itself every STATE_SAVE_RETRY_S when no prompt comes. SAM2 track files retry on
the next frame after ``worker.track_save_interval_s``."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from samsa_stream import runtime
from samsa_stream.protocol import ClickPrompt, UndoPrompt
from samsa_stream.settings import load_settings
from samsa_stream.worker.core import STATE_SAVE_RETRY_S, Worker
from tests.conftest import phantom_frames

CAM, FRAMES = phantom_frames(count=4, bands=8, height=40, width=48)


class _FullFile:
    """A file on a full disk: opening works, writing fails."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Disk:
    """The disk the atomic writes of ``samsa_stream.runtime`` land on; ``full`` makes every write fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        real = runtime.os
        fdopen = real.fdopen

        def open_file(fd: int, mode: str = "r", *args: Any) -> Any:
            fh = fdopen(fd, mode, *args)
            return _FullFile(fh) if self.full else fh

        proxy = SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if not name.startswith("__")})
        proxy.fdopen = open_file
        monkeypatch.setattr(runtime, "os", proxy)  # only the runtime module's writes see the full disk


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    return Disk(monkeypatch)


def spectral_worker(state: Path, clock: Clock) -> Worker:
    worker = Worker(load_settings(overrides={"worker": {"state_file": str(state)}}), clock=clock)
    worker.accept(FRAMES[0])
    return worker


def click(worker: Worker, oid: int, frame: int = 0) -> Any:
    return worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=oid, x=CAM.centre(oid - 1, frame)[0],
                                            y=CAM.centre(oid - 1, frame)[1]))


def saved_objects(path: Path) -> list[int]:
    data = json.loads(path.read_text())
    return sorted(o["id"] for o in data["streams"]["cam0"]["objects"])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "prompts.json")


def test_a_full_disk_is_reported_and_the_old_file_stays_whole(tmp_path: Path, disk: Disk) -> None:
    state = tmp_path / "prompts.json"
    worker = spectral_worker(state, Clock())
    assert click(worker, 1).ok and saved_objects(state) == [1]
    disk.full = True
    reply = click(worker, 2)
    assert reply.ok, "the click applies even though it cannot be saved"
    assert len(reply.warnings) == 1 and reply.warnings[0].startswith("click applied but not saved: cannot write")
    assert "No space left on device" in reply.warnings[0]
    assert worker.stats.counters["state_save_failed"] == 1
    assert saved_objects(state) == [1], "the file from before the full disk is intact"
    assert leftovers(tmp_path) == [], "a failed write leaves no temporary file"


def test_the_worker_keeps_segmenting_on_a_full_disk(tmp_path: Path, disk: Disk) -> None:
    worker = spectral_worker(tmp_path / "prompts.json", Clock())
    disk.full = True
    assert click(worker, 1).ok and click(worker, 2).ok
    for frame in FRAMES[1:]:
        worker.accept(frame)
        (sid,) = worker.dirty_streams()
        result = worker.segment(sid)
        assert [o.object_id for o in result.objects] == [1, 2] and all(o.mask.any() for o in result.objects)
    assert worker.stats.counters["frames_processed"] == len(FRAMES) - 1


def test_the_next_prompt_change_saves_once_the_disk_is_back(tmp_path: Path, disk: Disk) -> None:
    state = tmp_path / "prompts.json"
    worker = spectral_worker(state, Clock())
    disk.full = True
    assert click(worker, 1).ok and click(worker, 2).ok
    assert not state.exists() and worker.stats.counters["state_save_failed"] == 2
    disk.full = False
    reply = worker.handle_prompt(UndoPrompt(stream_id="cam0", object_id=2))  # takes object 2 away
    assert reply.ok and reply.warnings == []
    assert saved_objects(state) == [1], "the prompts as they are now, not only the change"
    assert worker.stats.counters["state_save_failed"] == 2


def test_without_a_prompt_the_state_is_written_again_on_a_timer(tmp_path: Path, disk: Disk) -> None:
    state = tmp_path / "prompts.json"
    clock = Clock()
    worker = spectral_worker(state, clock)
    disk.full = True
    assert click(worker, 1).ok
    clock.now += STATE_SAVE_RETRY_S
    worker.dirty_streams()  # the socket loop asks this every turn
    assert worker.stats.counters["state_save_retries_failed"] == 1, "a retry on a still full disk is counted"
    disk.full = False
    clock.now += STATE_SAVE_RETRY_S / 2
    worker.dirty_streams()
    assert not state.exists(), "no retry sooner than STATE_SAVE_RETRY_S after the last failure"
    clock.now += STATE_SAVE_RETRY_S / 2
    worker.dirty_streams()
    assert saved_objects(state) == [1]
    assert worker.stats.counters["state_save_retried"] == 1
    clock.now += 10 * STATE_SAVE_RETRY_S
    worker.dirty_streams()
    assert worker.stats.counters["state_save_retried"] == 1, "once written, nothing more to retry"
    assert worker.stats.counters["state_save_failed"] == 1 and worker.stats.counters["state_save_retries_failed"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    clock = Clock()
    worker = spectral_worker(folder / "prompts.json", clock)
    folder.chmod(0o500)
    try:
        reply = click(worker, 1)
        assert reply.ok and "Permission denied" in reply.warnings[0]
    finally:
        folder.chmod(0o700)
    clock.now += STATE_SAVE_RETRY_S
    worker.dirty_streams()
    assert saved_objects(folder / "prompts.json") == [1]


def test_sam2_track_files_on_a_full_disk(tmp_path: Path, disk: Disk, one_torch_thread: None) -> None:
    """Track files are saved on frames, so a failed save is tried again on a later frame."""
    state = tmp_path / "prompts.json"
    settings = load_settings(overrides={"worker": {
        "engine": "rgb", "random_weights": True, "seed": 7, "image_size": 128, "device": "cpu",
        "state_file": str(state), "track_save_interval_s": 0}})
    worker = Worker(settings, clock=Clock())
    assert worker.engine.keeps_memory
    worker.accept(FRAMES[0])
    disk.full = True
    assert click(worker, 1).ok
    for frame in FRAMES[1:3]:
        worker.accept(frame)
        assert [o.object_id for o in worker.segment("cam0").objects] == [1]
    assert worker.stats.counters["track_save_failed"] >= 1 and worker.stats.counters["tracks_saved"] == 0
    tracks = state.with_name(state.name + ".tracks")
    assert not list(tracks.glob("*.track")) and not [p for p in tracks.iterdir() if p.is_file()]
    disk.full = False
    worker.accept(FRAMES[3])
    worker.segment("cam0")
    assert worker.stats.counters["tracks_saved"] == 1
    assert [p.name for p in tracks.iterdir()] == ["cam0.1.track"]
