"""Click scripts: parsing, the errors that name the entry, and placing clicks from a label map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.demo import DEMO_CLICKS, demo_script
from samsa_stream.protocol import ClickPrompt, RemovePrompt, ResetPrompt, UndoPrompt
from samsa_stream.recording.script import (
    ScriptError,
    background_point,
    interior_point,
    label_position,
    load_script,
    parse_script,
)

GOOD = """
[[click]]
frame = 5
x = 40
y = 30
object = 1

[[click]]
frame = 2
object = 2
positive = false
object_centre = 1
label = "vessel"

[[undo]]
frame = 7

[[remove]]
frame = 8
object = 2

[[reset]]
frame_fraction = 0.5
"""


def test_a_script_reads_from_toml_and_json_alike(tmp_path: Path) -> None:
    toml = tmp_path / "clicks.toml"
    toml.write_text(GOOD)
    script = load_script(toml)
    as_json = tmp_path / "clicks.json"
    as_json.write_text(json.dumps({"click": [{"frame": 5, "x": 40, "y": 30, "object": 1}]}))
    assert load_script(as_json).entries[0] == script.entries[0]
    assert [e.frame_in(20) for e in script.ordered(20)] == [2, 5, 7, 8, 10]
    assert [e.action() for e in script.ordered(20)] == ["object 2 negative", "object 1 positive", "undo",
                                                       "remove object 2", "reset"]
    assert [e.action() for e in script.on_frame(10, 20)] == ["reset"]
    click = script.entries[0].request("cam0", 5)
    assert click == ClickPrompt(stream_id="cam0", object_id=1, x=40.0, y=30.0, positive=True, frame_id=5)
    requests = [e.request("cam0", 9) for e in script.entries[2:]]
    assert [type(r) for r in requests] == [UndoPrompt, RemovePrompt, ResetPrompt]


@pytest.mark.parametrize(("data", "message"), [
    ({}, "holds no prompts"),
    ({"clik": []}, "unknown section(s) 'clik'"),
    ({"click": {"frame": 1}}, "must be an array of tables"),
    ({"click": [{"x": 1, "y": 2, "object": 1}]}, "click #1: give either frame"),
    ({"click": [{"frame": 1, "frame_fraction": 0.1, "x": 1, "y": 2, "object": 1}]}, "give either frame"),
    ({"click": [{"frame": -1, "x": 1, "y": 2, "object": 1}]}, "frame must be an integer 0"),
    ({"click": [{"frame": 1.5, "x": 1, "y": 2, "object": 1}]}, "frame must be an integer"),
    ({"reset": [{"frame_fraction": 1.0}]}, "frame_fraction must be a number from 0"),
    ({"click": [{"frame": 1, "x": 1, "y": 2}]}, "click #1: needs object"),
    ({"click": [{"frame": 1, "x": 1, "y": 2, "object": 0}]}, "object must be an integer 1.."),
    ({"click": [{"frame": 1, "x": 1, "object": 1}]}, "y must be a pixel position"),
    ({"click": [{"frame": 1, "x": -3, "y": 2, "object": 1}]}, "x must be a pixel position >= 0"),
    ({"click": [{"frame": 1, "object": 1}]}, "place the click one way"),
    ({"click": [{"frame": 1, "x": 1, "y": 2, "object_centre": 0, "object": 1}]}, "place the click one way"),
    ({"click": [{"frame": 1, "at": "centre", "object": 1}]}, 'at must be "background"'),
    ({"click": [{"frame": 1, "x": 1, "y": 2, "object": 1, "positive": "yes"}]}, "positive must be true or false"),
    ({"click": [{"frame": 1, "x": 1, "y": 2, "object": 1, "colour": 3}]}, "unknown field(s) colour"),
    ({"remove": [{"frame": 1}]}, "remove #1: needs object"),
    ({"undo": [{"frame": 1, "x": 3}]}, "undo #1: unknown field(s) x"),
])
def test_every_mistake_is_named(data: object, message: str) -> None:
    with pytest.raises(ScriptError) as err:
        parse_script(data, "clicks.toml")
    assert message in str(err.value) and str(err.value).startswith("clicks.toml")


def test_unreadable_files_are_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[click]\nframe = ")
    with pytest.raises(ScriptError, match="bad.toml is not valid TOML"):
        load_script(bad)
    with pytest.raises(ScriptError, match="cannot be read"):
        load_script(tmp_path / "absent.json")


def test_clicks_are_placed_from_the_label_map() -> None:
    labels = np.zeros((20, 30), np.int32)
    labels[3:12, 5:14] = 1  # object 0: a 9 x 9 block centred at (9, 7)
    labels[12:19, 20:29] = 2
    assert interior_point(labels, 1) == (9.0, 7.0)
    x, y = background_point(labels)
    assert labels[int(y), int(x)] == 0
    script = parse_script({"click": [{"frame": 0, "object": 1, "object_centre": 0},
                                     {"frame": 0, "object": 1, "at": "background", "positive": False},
                                     {"frame": 0, "object": 3, "object_centre": 5}]})
    place = label_position(labels)
    first = script.entries[0].request("cam0", 0, place)
    assert isinstance(first, ClickPrompt) and (first.x, first.y) == (9.0, 7.0)
    with pytest.raises(ScriptError, match="label 6 is not on this frame's label map"):
        script.entries[2].request("cam0", 0, place)
    with pytest.raises(ScriptError, match="needs a label map"):
        script.entries[0].request("cam0", 0, label_position(None))


def test_the_demo_reads_its_clicks_from_config() -> None:
    # The package ships config/demo-clicks.toml (a link in samsa_stream/data): one file, two places to find it.
    assert DEMO_CLICKS.resolve() == (Path(__file__).resolve().parents[2] / "config" / "demo-clicks.toml")
    script = demo_script()
    assert [(e.frame_in(30), e.action()) for e in script.ordered(30)] == [
        (3, "object 1 positive"), (6, "object 1 negative"), (12, "object 2 positive")]
