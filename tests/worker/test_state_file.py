"""The prompt state file: a file of the wrong shape is set aside and the worker starts; objects that
do not hold up are dropped alone; a state that cannot be saved says so in the reply."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samsa_stream.protocol import ClickPrompt, PromptReply, StatusPrompt
from samsa_stream.settings import load_settings
from samsa_stream.worker.core import Worker
from samsa_stream.worker.prompts import PromptBook, PromptError, restore_state
from tests.conftest import phantom_frames


def worker_on(path: Path, **worker: object) -> Worker:
    return Worker(load_settings(overrides={"worker": {"state_file": str(path), **worker}}))


def saved_state(tmp_path: Path) -> tuple[dict[str, Any], Any, list]:
    """A real state file's content: two objects on cam0, one on cam1."""
    cam, frames = phantom_frames(count=1)
    _, other = phantom_frames(count=1, stream_id="cam1")
    worker = worker_on(tmp_path / "first.json")
    worker.accept(frames[0])
    worker.accept(other[0])
    for sid, oid, k in (("cam0", 1, 0), ("cam0", 2, 1), ("cam1", 1, 0)):
        x, y = cam.centre(k, 0)
        assert worker.handle_prompt(ClickPrompt(stream_id=sid, object_id=oid, x=x, y=y)).ok
    return json.loads((tmp_path / "first.json").read_text()), cam, frames


@pytest.mark.parametrize("content", [
    "null", "[]", '"prompts"', "1e999", '{"streams": []}', '{"version": 1, "streams": []}',
    '{"version": 2, "streams": {}}', '{"version": 1}', '{"version": 1, "streams": {"cam0": []}}',
    '{"version": 1, "streams": {"cam0": {}}}', '{"version": 1, "streams": {"cam0": {"objects": {}, "order": []}}}',
    '{"version": 1, "streams": {"cam0": {"objects": [], "order": [true]}}}',
    '{"version": 1, "streams": {"cam0": {"objects": [], "order": [], "revision": -1}}}',
    '{"version": 1, "streams": {"cam0": {"objects": [], "order": [1]}}}',
    "[" * 100_000, "{not json", "\udcff", ""])
def test_a_state_file_of_the_wrong_shape_is_set_aside(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prompts.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    worker = worker_on(path)
    assert worker.streams == {} and worker.stats.counters["state_load_failed"] == 1
    (aside,) = tmp_path.glob("prompts.json.bad-*")
    assert aside.read_bytes() == content.encode("utf-8", "surrogateescape") and not path.exists()
    PromptReply.from_parts(worker.handle_prompt(StatusPrompt()).to_parts())


def test_a_valid_state_file_is_restored_untouched(tmp_path: Path) -> None:
    data, _, _ = saved_state(tmp_path)
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(data))
    worker = worker_on(path)
    assert sorted(worker.streams) == ["cam0", "cam1"] and sorted(worker.streams["cam0"].book.objects) == [1, 2]
    assert not list(tmp_path.glob("*.bad-*")) and sum(worker.stats.counters.values()) == 0


def _break(obj: dict[str, Any], how: str) -> None:
    click = obj["clicks"][0]
    if how == "reference_length":
        click["reference"] = click["reference"][:-1]
    elif how == "nan_x":
        click["x"] = math.nan
    elif how == "inf_reference":
        click["reference"][0] = math.inf
    elif how == "wavelengths_decreasing":
        click["wavelengths_nm"] = click["wavelengths_nm"][::-1]
    elif how == "zero_reference":
        click["reference"] = [0.0] * len(click["reference"])
    elif how == "no_clicks":
        obj["clicks"] = []
    elif how == "id_zero":
        obj["id"] = 0
    elif how == "label_number":
        obj["label"] = 7
    elif how == "click_list":
        obj["clicks"] = [[1, 2]]
    elif how == "huge_int":
        click["frame_id"] = 2**80


@pytest.mark.parametrize("how", ["reference_length", "nan_x", "inf_reference", "wavelengths_decreasing",
                                 "zero_reference", "no_clicks", "id_zero", "label_number", "click_list", "huge_int"])
def test_an_object_that_does_not_hold_up_is_dropped_alone(tmp_path: Path, how: str) -> None:
    data, cam, frames = saved_state(tmp_path)
    bad = next(o for o in data["streams"]["cam0"]["objects"] if o["id"] == 1)
    _break(bad, how)
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(data))
    worker = worker_on(path)
    assert worker.stats.counters["state_objects_dropped"] == 1 and worker.stats.counters["state_load_failed"] == 0
    assert sorted(worker.streams["cam0"].book.objects) == [2] and sorted(worker.streams["cam1"].book.objects) == [1]
    assert len(list(tmp_path.glob("prompts.json.bad-*"))) == 1  # the original is kept for inspection
    # The stream works: objects old and new are segmented on every later frame.
    worker.accept(frames[0])
    x, y = cam.centre(0, 0)
    assert worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=3, x=x, y=y)).ok
    result = worker.segment("cam0")
    assert [o.object_id for o in result.objects] == [2, 3] and result.objects[1].mask[int(y), int(x)]
    assert worker.stats.counters["objects_failed"] == 0


def test_a_stream_with_an_invalid_id_is_dropped(tmp_path: Path) -> None:
    data, _, _ = saved_state(tmp_path)
    data["streams"]["cam0/x"] = data["streams"].pop("cam0")
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(data))
    worker = worker_on(path)
    assert sorted(worker.streams) == ["cam1"] and worker.stats.counters["state_streams_dropped"] == 1


def test_streams_beyond_the_cap_are_dropped(tmp_path: Path) -> None:
    data, _, _ = saved_state(tmp_path)
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(data))
    worker = worker_on(path, max_streams=1)
    assert len(worker.streams) == 1 and worker.stats.counters["state_streams_dropped"] == 1


def test_a_click_that_cannot_be_saved_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    worker = worker_on(blocker / "prompts.json")
    cam, (frame,) = phantom_frames(count=1)
    worker.accept(frame)
    reply = worker.handle_prompt(ClickPrompt(stream_id="cam0", object_id=1, x=cam.centre(0, 0)[0],
                                             y=cam.centre(0, 0)[1]))
    assert reply.ok and len(reply.warnings) == 1
    assert reply.warnings[0].startswith("click applied but not saved: cannot write prompt state to")
    assert worker.stats.counters["state_save_failed"] == 1
    assert PromptReply.from_parts(reply.to_parts()).warnings == reply.warnings


# -- fuzz: whatever the file holds, the worker starts -------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)


def _mutate(data: Any, path: list[int], value: Any) -> Any:
    """``data`` with the node picked by ``path`` (indices into each container level) replaced by ``value``."""
    if not path or not isinstance(data, (dict, list)) or not data:
        return value
    if isinstance(data, dict):
        key = sorted(data)[path[0] % len(data)]
        return {**data, key: _mutate(data[key], path[1:], value)}
    i = path[0] % len(data)
    return [*data[:i], _mutate(data[i], path[1:], value), *data[i + 1:]]


def _valid_book() -> dict[str, Any]:
    book = PromptBook()
    from samsa_stream.worker.prompts import Click

    for oid in (1, 2):
        book.add_click(oid, Click(3.0, 4.0, True, 0, np.array([0.2, 0.4, 0.6], np.float32),
                                  np.array([500.0, 600.0, 700.0])))
    book.add_click(1, Click(5.0, 6.0, False, 1, np.array([0.5, 0.1, 0.3], np.float32), np.array([500.0, 600.0, 700.0])))
    return book.to_dict()


VALID = {"version": 1, "streams": {"cam0": _valid_book(), "cam1": _valid_book()}}


def _check_started(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prompts.json"
        path.write_bytes(content)
        worker = worker_on(path)
        counters = worker.stats.counters
        if counters["state_load_failed"]:
            assert worker.streams == {} and len(list(Path(folder).glob("prompts.json.bad-*"))) == 1
        for stream in worker.streams.values():
            assert stream.book.objects and PromptBook.from_dict(stream.book.to_dict()).state() == stream.book.state()
        PromptReply.from_parts(worker.handle_prompt(StatusPrompt()).to_parts())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values)
def test_any_json_starts_the_worker(data: Any) -> None:
    _check_started(json.dumps(data).encode())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(st.integers(min_value=0, max_value=50), max_size=7), value=json_values)
def test_any_damage_to_a_valid_file_starts_the_worker(path: list[int], value: Any) -> None:
    _check_started(json.dumps(_mutate(VALID, path, value)).encode())


@settings(max_examples=80, deadline=None)
@given(path=st.lists(st.integers(min_value=0, max_value=50), max_size=7), value=json_values)
def test_the_loader_raises_nothing_but_a_prompt_error(path: list[int], value: Any) -> None:
    try:
        restored = restore_state(_mutate(VALID, path, value), max_streams=8)
    except PromptError:
        return
    for book in restored.books.values():
        for obj in book.objects.values():
            for click in obj.clicks:
                assert click.reference.shape == click.wavelengths_nm.shape and np.all(np.isfinite(click.reference))
                assert math.isfinite(click.x) and math.isfinite(click.y)
