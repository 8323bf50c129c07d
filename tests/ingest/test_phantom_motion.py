"""Phantom motion: object 1 leaves the field of view and returns (away_every); frames without it are unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samsa_stream.ingest.sources import PhantomCamera, SourceError
from samsa_stream.settings import PhantomSettings, SettingsError, load_settings

# sha256 of the cube bytes and label bytes of frames rendered before objects could leave the view.
# A mismatch means the phantom draws different frames with away_every = 0 (the default).
PINNED: dict[str, tuple[dict[str, object], dict[int, tuple[str, str]]]] = {
    "default": ({}, {
        0: ("4b7482d97bccaa6958c5ae1f12b535a5bef6ceac531e94bbb1cde80992b39e62",
            "80fa9cea5e11de9dbf039607f8d2b835ef01ddb66d529582db3e843e88193b3e"),
        1: ("779dda7dac5a4ff89daf1bf20f1eb3811b9b24a73f9bbc71beca5d59650ae49a",
            "ac7f9c52cb706835b74eba4f397e8823678777489e538561e6550a7f9d988e6f"),
        17: ("76ead62f3240d5e5c70f4294f1bb7a11d6a682b64b82d700aea4f216deb71c20",
             "4d013784db01903cf0857704a8c0cc85e16139168026458396df7db8738826cf"),
        250: ("2a91d30a9c435944fa3d4544e6d06f9acce5c776c5a8fa75090cf4c1c06ce8d2",
              "cc5ef38e92caf0d7c6676d4aaae9b01aeb3f7c34883d0e42e19dabea4971f8b5"),
    }),
    "three_small": ({"height": 48, "width": 64, "bands": 8, "objects": 3, "noise": 0.0, "motion_px": 3.0,
                     "seed": 5}, {
        0: ("87b7f7f530869a8e7855f039530d8f3413efe00dac4a2ebbbb18662925473764",
            "5958788c6c3c7b8bb635dd70d1dec6763d539c81c9c20687d1a5e83159a34a17"),
        9: ("7f1bc83aedfa10d9ea4e0f22a53f5621db641b2c4da9de847c9dfaeca320d6ff",
            "1785664ee84979dbad0be325ba360daf55a668a5baef01cee9c7c52dc4d2810b"),
        40: ("b2a60b89162d2ea261c9de700e6b3f25aa6fbd1f36424c4c0c9931e642b8036a",
             "fc20f49f0686599501fb83e74d2845c55b10fb8fc47ebf11195dfb6540a5a6a9"),
    }),
    "still": ({"height": 32, "width": 40, "bands": 4, "objects": 1, "motion_px": 0.0, "variability": 0.0,
               "seed": 2}, {
        0: ("88f505d16065f1829c82526802afd9a5eabad92082155601f9e5049fc01cce59",
            "52d3b9b82efec3958aa061f7dcca0f8b915f323e33ffa2d68a2f1409d418fece"),
        3: ("05a20a162b2a1482f68fe0bf3c76ba6c15109d4b69534fadb86c6d78ccf3d4e2",
            "52d3b9b82efec3958aa061f7dcca0f8b915f323e33ffa2d68a2f1409d418fece"),
    }),
}

EVERY, FRAMES = 20, 6  # excursions on frames 20..25, 40..45, 60..65


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _count(labels: np.ndarray, object_id: int) -> int:
    return int((labels == object_id).sum())


@pytest.mark.parametrize("case", sorted(PINNED))
@pytest.mark.parametrize("away", [{}, {"away_every": 0, "away_frames": 3}])
def test_frames_with_objects_staying_in_view_are_unchanged(case: str, away: dict[str, int]) -> None:
    overrides, frames = PINNED[case]
    cam = PhantomCamera(PhantomSettings.model_validate({**overrides, **away}))
    for k, (cube_sha, labels_sha) in frames.items():
        capture = cam.render(k)
        assert capture.labels is not None
        assert (_sha(capture.cube), _sha(capture.labels)) == (cube_sha, labels_sha), f"{case} frame {k} changed"
        assert _sha(cam.labels(k)) == labels_sha


def test_object_one_leaves_the_view_and_returns_at_its_normal_size() -> None:
    still = PhantomCamera(PhantomSettings())
    away = PhantomCamera(PhantomSettings(away_every=EVERY, away_frames=FRAMES))
    counts = [_count(away.labels(k), 1) for k in range(70)]
    gone = [k for k, n in enumerate(counts) if n == 0]
    assert gone and set(gone) <= {k for k in range(70) if k >= EVERY and k % EVERY < FRAMES}
    assert {k // EVERY for k in gone} == {1, 2, 3}  # every excursion, not only the first
    for k in range(70):
        if k < EVERY or k % EVERY >= FRAMES:  # in view: exactly the frame drawn without excursions
            assert counts[k] == _count(still.labels(k), 1) > 1000
            assert away.visible(0, k) == 1.0
            assert away.centre(0, k) == still.centre(0, k)
    # Leaves over a few frames, comes back the same way.
    assert 0 < counts[21] < counts[19] and 0 < counts[24] < counts[26]
    assert [away.visible(0, k) for k in (22, 23, 42, 43, 62, 63)] == [0.0] * 6
    assert 0.0 < away.visible(0, 21) < 1.0 and 0.0 < away.visible(0, 24) < 1.0


def test_other_objects_and_frames_outside_excursions_are_unaffected() -> None:
    kw: dict[str, object] = {"height": 60, "width": 80, "bands": 6, "objects": 3}
    still = PhantomCamera(PhantomSettings.model_validate(kw))
    away = PhantomCamera(PhantomSettings.model_validate({**kw, "away_every": EVERY, "away_frames": FRAMES}))
    for k in (19, 20, 22, 23, 25, 26, 43, 47):
        moved, fixed = away.render(k), still.render(k)
        assert moved.labels is not None and fixed.labels is not None
        np.testing.assert_array_equal(moved.labels, away.labels(k))  # render's labels are the ground truth
        for obj in (1, 2):
            assert away.centre(obj, k) == still.centre(obj, k)
            np.testing.assert_array_equal(moved.labels == obj + 1, fixed.labels == obj + 1)
        if k % EVERY >= FRAMES:
            np.testing.assert_array_equal(moved.cube, fixed.cube)
            np.testing.assert_array_equal(moved.labels, fixed.labels)
        else:
            assert not np.array_equal(moved.cube, fixed.cube)


def test_an_object_out_of_view_leaves_only_background() -> None:
    cam = PhantomCamera(PhantomSettings(height=40, width=56, bands=5, objects=1, noise=0.0,
                                        away_every=10, away_frames=3))
    capture = cam.render(11)  # the middle of the first excursion
    background = np.clip(np.broadcast_to(cam.spectra[0], capture.cube.shape) * cam.shading[..., None], 0.0, 1.0)
    np.testing.assert_array_equal(capture.cube, background)
    assert capture.labels is not None and not capture.labels.any()
    assert cam.visible(0, 11) == 0.0
    assert not np.array_equal(cam.render(13).cube, background)  # back in view


@settings(max_examples=30, deadline=None)
@given(height=st.integers(16, 64), width=st.integers(16, 64), objects=st.integers(1, 3), seed=st.integers(0, 99),
       every=st.integers(2, 30), frames=st.integers(1, 29), cycle=st.integers(1, 4), motion=st.floats(0.0, 4.0))
def test_the_middle_of_every_excursion_is_wholly_out_of_view(height: int, width: int, objects: int, seed: int,
                                                             every: int, frames: int, cycle: int,
                                                             motion: float) -> None:
    frames = min(frames, every - 1)
    kw: dict[str, object] = {"height": height, "width": width, "objects": objects, "seed": seed, "bands": 2,
                             "motion_px": motion}
    cam = PhantomCamera(PhantomSettings.model_validate({**kw, "away_every": every, "away_frames": frames}))
    still = PhantomCamera(PhantomSettings.model_validate(kw))
    k = cycle * every + frames // 2
    labels, fixed = cam.labels(k), still.labels(k)
    assert cam.visible(0, k) == 0.0 and _count(labels, 1) == 0
    np.testing.assert_array_equal(labels[labels > 1], fixed[labels > 1])
    np.testing.assert_array_equal(labels > 1, fixed > 1)
    after = cycle * every + frames  # first frame back on its lane
    np.testing.assert_array_equal(cam.labels(after), still.labels(after))
    assert cam.visible(0, after) == still.visible(0, after)


def test_visible_names_an_unknown_object() -> None:
    cam = PhantomCamera(PhantomSettings(objects=2))
    with pytest.raises(SourceError, match="phantom object 2 does not exist"):
        cam.visible(2, 0)


def test_describe_mentions_excursions_only_when_on() -> None:
    assert "away" not in PhantomCamera(PhantomSettings()).describe()
    assert PhantomCamera(PhantomSettings(away_every=9, away_frames=2)).describe()["away"] == {"every": 9, "frames": 2}


@pytest.mark.parametrize("phantom, message", [
    ({"away_every": -1}, r"ingest\.phantom\.away_every: Input should be greater than or equal to 0"),
    ({"away_every": 10, "away_frames": 0}, r"ingest\.phantom\.away_frames: Input should be greater than or equal to 1"),
    ({"away_every": 10, "away_frames": 10},
     r"ingest\.phantom: .*away_frames \(10\) must be less than away_every \(10\)"),
    ({"away_every": 4, "away_frames": 8}, r"away_frames \(8\) must be less than away_every \(4\)"),
])
def test_invalid_excursion_settings_name_the_field(phantom: dict[str, int], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(overrides={"ingest": {"phantom": phantom}})


def test_excursion_settings_accepted() -> None:
    assert load_settings(overrides={"ingest": {"phantom": {"away_frames": 50}}}).ingest.phantom.away_every == 0
    s = load_settings(overrides={"ingest": {"phantom": {"away_every": "30", "away_frames": "29"}}}).ingest.phantom
    assert (s.away_every, s.away_frames) == (30, 29)


def test_the_noise_bank_gives_each_frame_its_own_noise_of_the_set_strength() -> None:
    base = {"height": 40, "width": 50, "bands": 12, "noise": 0.02, "seed": 3}
    banked = PhantomCamera(PhantomSettings(**base, noise_bank=True))
    clean = PhantomCamera(PhantomSettings(**{**base, "noise": 0.0}))
    noise = [banked.render(k).cube - clean.render(k).cube for k in (0, 1, 2)]
    inside = [n[(c > 0.05) & (c < 0.95)] for n, c in zip(noise, [clean.render(k).cube for k in (0, 1, 2)], strict=True)]
    for values in inside:
        assert abs(float(values.std()) - 0.02) < 0.003 and abs(float(values.mean())) < 0.003
    assert not np.allclose(noise[0], noise[1]) and not np.allclose(noise[1], noise[2])
    assert np.array_equal(banked.render(1).cube, PhantomCamera(banked.settings).render(1).cube)  # reproducible


def test_looped_frames_repeat_every_n_and_normalize_without_being_written() -> None:
    from samsa_stream.ingest.normalize import Normalizer
    from samsa_stream.settings import IngestSettings

    base = {"height": 30, "width": 40, "bands": 6, "seed": 1}
    looped = PhantomCamera(PhantomSettings(**base, loop_frames=3))
    fresh = PhantomCamera(PhantomSettings(**base))
    for k in (0, 1, 2):
        assert np.array_equal(looped.render(k).cube, fresh.render(k).cube)
        assert np.array_equal(looped.render(k + 3).cube, fresh.render(k).cube)
        assert looped.centre(0, k + 6) == fresh.centre(0, k)
        assert np.array_equal(looped.labels(k + 3), fresh.labels(k))
    capture = looped.render(4)
    assert capture.metadata["phantom_frame"] == 4 and not capture.cube.flags.writeable
    frame = Normalizer(IngestSettings())(capture, "cam0", 4, 0)
    assert np.array_equal(np.asarray(frame.cube, dtype=np.float32), looped.render(1).cube)
