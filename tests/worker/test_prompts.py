"""The prompt state machine: clicks, undo, remove, reset, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from samsa_stream.worker.prompts import Click, PromptBook, PromptError


def click(x: float = 1, y: float = 2, positive: bool = True, frame_id: int = 0, bands: int = 4) -> Click:
    return Click(x, y, positive, frame_id, np.arange(1, bands + 1, dtype=np.float32), np.linspace(500, 800, bands))


def test_first_click_creates_object_with_colour_and_label() -> None:
    book = PromptBook()
    obj = book.add_click(1, click(), label="tumour")
    assert obj.label == "tumour" and obj.colour and book.state()["objects"][0]["id"] == 1
    book.add_click(2, click())
    assert book.objects[2].label == "object 2" and book.objects[2].colour != obj.colour


def test_first_click_of_an_object_must_be_positive() -> None:
    with pytest.raises(PromptError, match="first click must be positive"):
        PromptBook().add_click(1, click(positive=False))


def test_invalid_object_id() -> None:
    with pytest.raises(PromptError, match="positive integer"):
        PromptBook().add_click(0, click())


def test_undo_goes_back_in_order_and_drops_empty_objects() -> None:
    book = PromptBook()
    book.add_click(1, click(1))
    book.add_click(2, click(2))
    book.add_click(1, click(3, positive=False))
    book.undo()
    assert len(book.objects[1].clicks) == 1
    book.undo()
    assert 2 not in book.objects
    book.undo()
    assert book.objects == {}
    with pytest.raises(PromptError, match="nothing to undo"):
        book.undo()


def test_undo_per_object() -> None:
    book = PromptBook()
    book.add_click(1, click(1))
    book.add_click(2, click(2))
    book.add_click(2, click(3))
    book.undo(1)
    assert set(book.objects) == {2} and len(book.objects[2].clicks) == 2
    with pytest.raises(PromptError, match="unknown object 1"):
        book.undo(1)


def test_undo_of_a_negative_keeps_the_object() -> None:
    book = PromptBook()
    book.add_click(1, click(1))
    book.add_click(1, click(2, positive=False))
    book.undo(1)
    assert [c.positive for c in book.objects[1].clicks] == [True]


def test_remove_and_reset_leave_other_objects_alone() -> None:
    book = PromptBook()
    for oid in (1, 2, 3):
        book.add_click(oid, click(oid))
    book.remove(2)
    assert set(book.objects) == {1, 3}
    book.undo()  # the last click (object 3) goes, object 1 stays
    assert set(book.objects) == {1}
    with pytest.raises(PromptError, match=r"unknown object 2 \(known: \[1\]\)"):
        book.remove(2)
    rev = book.revision
    book.reset()
    assert book.objects == {} and book.revision > rev


def test_round_trip_through_dict() -> None:
    book = PromptBook()
    book.add_click(1, click(1), label="a")
    book.add_click(2, click(2))
    book.add_click(1, click(3, positive=False))
    back = PromptBook.from_dict(book.to_dict())
    assert back.state() == book.state()
    np.testing.assert_array_equal(back.objects[1].clicks[0].reference, book.objects[1].clicks[0].reference)
    back.undo()
    assert len(back.objects[1].clicks) == 1


def test_inconsistent_saved_state_is_refused() -> None:
    book = PromptBook()
    book.add_click(1, click())
    data = book.to_dict()
    data["order"] = [1, 1]
    with pytest.raises(PromptError, match="inconsistent"):
        PromptBook.from_dict(data)


def test_reference_resampled_for_another_camera() -> None:
    c = Click(0, 0, True, 0, np.array([1.0, 2.0, 3.0], np.float32), np.array([500.0, 600.0, 700.0]))
    np.testing.assert_allclose(c.reference_on(np.array([550.0, 650.0])), [1.5, 2.5])
    with pytest.raises(PromptError, match="do not overlap"):
        c.reference_on(np.array([900.0, 950.0]))


def test_a_stale_click_round_trips_and_a_bad_stale_flag_is_refused() -> None:
    click = Click(3.0, 4.0, True, 7, np.array([0.2, 0.3], np.float32), np.array([500.0, 600.0]), stale=True)
    again = Click.from_dict(click.to_dict())
    assert again.stale and not again.recent_on(7, 4)
    assert not Click.from_dict({**click.to_dict(), "stale": False}).stale
    assert "stale" not in Click.from_dict({**click.to_dict(), "stale": False}).to_dict()
    with pytest.raises(PromptError, match="click 'stale' must be true or false"):
        Click.from_dict({**click.to_dict(), "stale": 1})
