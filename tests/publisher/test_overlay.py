"""Overlay rendering and the publisher's message building, without sockets."""

from __future__ import annotations

import numpy as np
import pytest

from samsa_stream.protocol import (
    FrameImage,
    MaskBroadcast,
    ObjectMask,
    OverlayImage,
    SegmentationResult,
    StreamInfo,
    decode_image,
    encode_image,
)
from samsa_stream.publisher.overlay import render_overlay
from samsa_stream.publisher.process import Publisher
from samsa_stream.settings import load_settings


def scene() -> tuple[np.ndarray, list[ObjectMask]]:
    rgb = np.full((96, 128, 3), 100, np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[40:70, 50:90] = True
    return rgb, [ObjectMask(1, "liver", (255, 0, 0), mask, 0.9)]


def test_mask_is_blended_in_its_colour_and_the_rest_left_alone() -> None:
    rgb, objects = scene()
    out = render_overlay(rgb, objects, alpha=0.5)
    assert tuple(out[55, 70]) == (178, 50, 50)  # round(100 * 0.5 + colour * 0.5) inside
    assert tuple(out[90, 5]) == (100, 100, 100)  # far from the mask and its label
    assert (out[:10] == 100).all()  # no notices: no band


def test_an_object_judged_out_of_view_is_named_along_the_bottom() -> None:
    rgb, objects = scene()
    shown = render_overlay(rgb, objects)
    away = render_overlay(rgb, [*objects, ObjectMask(2, "vessel", (0, 0, 255), np.zeros((96, 128), bool), 0.0,
                                                     present=False)])
    changed = np.flatnonzero((away != shown).any(axis=(1, 2)))
    assert changed.size and changed.min() > 96 - 20  # only the bottom rows: the name in the object's colour
    assert (away[changed][..., 2] > 150).any()


def test_notices_get_a_red_band_on_top() -> None:
    rgb, objects = scene()
    out = render_overlay(rgb, objects, notices=["masks are meaningless", "second"])
    red = out[..., 0].astype(int) - out[..., 1] > 60
    band_rows = np.flatnonzero(red.mean(axis=1) > 0.5)
    assert band_rows[0] == 0 and 16 <= band_rows.size <= 40  # two rows of text at this size
    assert (out[band_rows[-1] + 2:band_rows[-1] + 6, 100:120] == 100).all()  # then the image again


def test_overlay_round_trips_through_png_exactly() -> None:
    rgb, objects = scene()
    out = render_overlay(rgb, objects)
    np.testing.assert_array_equal(decode_image(encode_image(out, "png")), out)


def test_publisher_sends_masks_first_and_caches_per_topic() -> None:
    rgb, objects = scene()
    pub = Publisher(load_settings(overrides={"publisher": {"overlay_every": 2}}))
    result = SegmentationResult("cam0", 7, 11, rgb, objects, "spectral", hops=[["ingest_out", 12]], notices=["n"])
    first = list(pub.publish(result))
    assert [b[0] for b in first] == [b"mask/cam0/", b"stream/cam0/", b"overlay/cam0/", b"image/cam0/"]
    masks = MaskBroadcast.from_parts([bytes(p) for p in first[0][1:]])
    hops = [h[0] for h in masks.hops]
    assert masks.seq == 1 and masks.notices == ["n"] and hops == ["ingest_out", "publisher_in", "publisher_out"]
    np.testing.assert_array_equal(masks.objects[0].mask, objects[0].mask)
    overlay = OverlayImage.from_parts([bytes(p) for p in first[2][1:]])
    assert overlay.seq == 1 and decode_image(overlay.data).shape == rgb.shape and not overlay.stale
    plain = FrameImage.from_parts([bytes(p) for p in first[3][1:]])
    assert plain.seq == 1 and np.abs(decode_image(plain.data).astype(int) - rgb).max() <= 8  # JPEG of the bare frame
    info = StreamInfo.from_parts([bytes(p) for p in first[1][1:]])
    assert (info.frame_id, info.size, info.engine, info.notices, info.stale) == (7, (96, 128), "spectral", ["n"], False)
    assert [o["label"] for o in info.objects] == ["liver"] and info.objects[0]["area"] == objects[0].mask.sum()
    second = list(pub.publish(SegmentationResult("cam0", 8, 12, rgb, objects, "spectral")))
    assert [b[0] for b in second] == [b"mask/cam0/", b"stream/cam0/"]  # overlay_every = 2
    # The cache holds the newest message of each topic: frame 8's masks, frame 7's overlay.
    cached = {b[0]: b for b in pub.replay_cache(b"")}
    assert sorted(cached) == [b"image/cam0/", b"mask/cam0/", b"overlay/cam0/", b"stream/cam0/"]
    assert MaskBroadcast.from_parts([bytes(p) for p in cached[b"mask/cam0/"][1:]]).frame_id == 8
    assert OverlayImage.from_parts([bytes(p) for p in cached[b"overlay/cam0/"][1:]]).frame_id == 7
    assert pub.replay_cache(b"mask/cam1/") == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stream_without_results_goes_stale_once_and_live_with_the_next_result() -> None:
    rgb, objects = scene()
    clock = FakeClock()
    pub = Publisher(load_settings(overrides={"display": {"stale_after_s": 2.0}}), clock=clock)
    list(pub.publish(SegmentationResult("cam0", 7, 11, rgb, objects, "spectral")))
    clock.now += 1.9
    assert pub.due_stale() == []
    clock.now += 0.2
    stale = pub.due_stale()
    assert [b[0] for b in stale] == [b"stream/cam0/", b"overlay/cam0/"]
    info = StreamInfo.from_parts([bytes(p) for p in stale[0][1:]])
    assert info.stale and info.seq == 1 and info.age_ms == pytest.approx(2100, abs=1)
    overlay = OverlayImage.from_parts([bytes(p) for p in stale[1][1:]])
    image = decode_image(overlay.data)
    assert overlay.stale and overlay.seq == 1
    assert image[1, 64, 0] > 200 and image[1, 64, 2] < 60  # the amber frame
    assert pub.due_stale() == []  # once
    cached = {b[0]: b for b in pub.replay_cache(b"stream/")}  # a display joining now learns it at once
    assert StreamInfo.from_parts([bytes(p) for p in cached[b"stream/cam0/"][1:]]).stale
    live = list(pub.publish(SegmentationResult("cam0", 8, 12, rgb, objects, "spectral")))
    assert not StreamInfo.from_parts([bytes(p) for p in live[1][1:]]).stale


def test_stream_info_counts_the_displays_subscribed_to_the_stream() -> None:
    rgb, objects = scene()
    pub = Publisher(load_settings())
    list(pub.publish(SegmentationResult("cam0", 7, 11, rgb, objects, "spectral")))
    pub.on_upstream([[b"\x01mask/cam0/"], [b"\x01mask/"], [b"\x01mask/cam1/"], [b"\x01overlay/cam0/"]])
    assert pub.stream_info("cam0").displays == 2
    pub.on_upstream([[b"\x00mask/"], [b"\x00mask/"]])  # an unsubscription never counts below zero
    assert pub.stream_info("cam0").displays == 1
    pub.on_upstream([[b"\x01" + b"mask/cam0/x%d" % k] for k in range(3)] + [[b"\x00" + b"mask/cam0/x%d" % k]
                                                                          for k in range(3)])
    assert not any(p.startswith(b"mask/cam0/x") for p in pub.subscriptions)  # nothing left behind
