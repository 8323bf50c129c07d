"""The training core: SAM2 frozen, the adapter learns and moves the decoder engine's masks, files and
checkpoints round-trip, a resumed run goes on where it stopped, and sample draws are reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samsa_stream.training.adapter import (
    AdapterTrainer,
    Example,
    TrainConfig,
    TrainingError,
    draw_samples,
    mask_loss,
)
from samsa_stream.worker.engines import ObjectMemory
from samsa_stream.worker.engines.decoder import DecoderEngine
from samsa_stream.worker.engines.fusion_adapter import load_adapter, read_adapter_info, save_adapter
from tests.conftest import phantom_frames
from tests.training.conftest import BANDS, SIZE, training_settings
from tests.worker.engines.test_rgb_fidelity import make_object

VARIANT = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def examples(train_runner) -> list[Example]:
    """Three embedded phantom images (two objects each): two to train on, one to validate."""
    _, frames = phantom_frames(bands=BANDS, height=SIZE, width=SIZE, count=9, objects=2)
    return [Example.embed(train_runner, f"frame{k}", frames[k], [frames[k].labels == v for v in (1, 2)])
            for k in (0, 4, 8)]


@pytest.fixture(scope="module")
def trained(train_runner, examples) -> AdapterTrainer:
    """24 steps without validation, so the best adapter is the last (shared by the tests that need one)."""
    trainer = AdapterTrainer(train_runner, training_settings(), TrainConfig(steps=24, batch=2, lr=3e-3, seed=0))
    trainer.fit(examples[:2])
    return trainer


def test_training_lowers_the_loss_and_leaves_sam2_alone(trained, train_runner) -> None:
    losses = trained.state.losses
    assert len(losses) == 24
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 0.05, (first, last)
    assert trained.adapter.out_s0.weight.abs().max() > 0 and trained.adapter.out_s1.weight.abs().max() > 0
    # SAM2 is frozen: no parameter takes gradients, none received any.
    assert not any(p.requires_grad or p.grad is not None for p in train_runner.model.parameters())
    assert trained.state.best_step == 24 and not trained.state.validations  # no validation: the last is the best
    assert all(torch.equal(trained.best_adapter().state_dict()[k], v.cpu())
               for k, v in trained.adapter.state_dict().items())


@pytest.mark.parametrize("clicks", [1, 2, 3])
def test_the_trained_forward_pass_is_the_decoder_engines(train_runner, examples, clicks: int) -> None:
    """What the loss sees for a sample's last click is exactly what the decoder engine computes for it."""
    trainer = AdapterTrainer(train_runner, training_settings(), TrainConfig(seed=2))
    generator = torch.Generator().manual_seed(clicks)
    with torch.no_grad():  # an adapter that changes the masks, so its input and output paths matter
        for layer in (trainer.adapter.out_s0, trainer.adapter.out_s1):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.5)
    ex = examples[0]
    last = trainer.last_click(ex, ex.masks[1], clicks)
    assert 1 <= len(last.obj.clicks) <= clicks
    # From the second click on, the previous result's clamped low-res logits are the dense mask prompt.
    assert (last.mask_logits is None) == (len(last.obj.clicks) == 1)
    with torch.no_grad():
        logits = trainer.logits(ex, last, trainer.adapter(last.adapter_input))
    seg = trainer.engine.segment(ex.ctx, last.obj, last.memory)
    assert seg.logits is not None
    np.testing.assert_allclose(logits.numpy(), seg.logits, rtol=1e-5, atol=1e-5)


def test_validation_keeps_the_best_adapter_and_stops_after_patience(monkeypatch, train_runner, examples) -> None:
    trainer = AdapterTrainer(train_runner, training_settings(),
                             TrainConfig(steps=20, batch=1, lr=3e-3, val_every=2, patience=2, seed=1))
    scores = iter([0.5, 0.6, 0.55, 0.58, 0.9])  # untrained, then steps 2, 4, 6: no better DICE twice after step 2
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def validate(val) -> float:
        assert val == examples[2:]
        weights[trainer.state.step] = {k: v.detach().clone() for k, v in trainer.adapter.state_dict().items()}
        return next(scores)

    monkeypatch.setattr(trainer, "validate", validate)
    state = trainer.fit(examples[:2], examples[2:])
    assert state.validations == [(0, 0.5), (2, 0.6), (4, 0.55), (6, 0.58)]
    assert state.stopped_early and state.step == 6
    assert state.initial_dice == 0.5 and state.best_dice == 0.6 and state.best_step == 2
    best = trainer.best_adapter().state_dict()
    assert all(torch.equal(best[k], v) for k, v in weights[2].items())
    assert not all(torch.equal(best[k], v) for k, v in weights[6].items())


def test_validation_runs_simulated_sessions(trained, examples) -> None:
    before = {k: v.clone() for k, v in trained.adapter.state_dict().items()}
    decodes = trained.runner.decodes
    dice = trained.validate(examples[2:])
    assert 0.0 <= dice <= 1.0
    assert trained.runner.decodes - decodes == 2 * trained.config.val_clicks  # two objects, every click decoded
    assert all(torch.equal(trained.adapter.state_dict()[k], v) for k, v in before.items())  # nothing learnt


def test_the_saved_adapter_round_trips_and_changes_the_decoder_engine(tmp_path: Path, trained, train_runner) -> None:
    best = trained.best_adapter()
    info = {"dataset": "phantom", "shots": 2, "seed": 0, "steps": trained.state.step,
            "val_dice": trained.state.best_dice, "image_size": 128, "random_weights": True}
    for suffix in (".safetensors", ".pt"):
        path = tmp_path / f"adapter{suffix}"
        save_adapter(path, best, VARIANT, info)
        loaded = load_adapter(path, VARIANT, train_runner.high_res_channels)
        assert loaded.state_dict().keys() == best.state_dict().keys()
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in best.state_dict().items())
        assert loaded.info == info and read_adapter_info(path) == info
    bare = tmp_path / "bare.pt"
    save_adapter(bare, best, VARIANT)  # no info: loads as before, with nothing recorded
    assert load_adapter(bare, VARIANT, train_runner.high_res_channels).info == {} and read_adapter_info(bare) == {}

    # The same clicks through the decoder engine: the trained adapter moves the logits, the untrained one does not.
    _, (frame,) = phantom_frames(bands=BANDS, height=SIZE, width=SIZE, count=1, objects=2)
    obj = make_object(frame, [(32.0, 21.0, True)])
    settings = training_settings()
    untrained = DecoderEngine(train_runner, settings)
    fused = DecoderEngine(train_runner, settings, load_adapter(tmp_path / "adapter.safetensors", VARIANT,
                                                                train_runner.high_res_channels))
    a = untrained.segment(untrained.prepare(frame), obj, ObjectMemory())
    b = fused.segment(fused.prepare(frame), obj, ObjectMemory())
    assert a.logits is not None and b.logits is not None
    assert np.abs(a.logits - b.logits).max() > 1e-3


def test_resume_goes_on_from_the_step_it_stopped_at(tmp_path: Path, train_runner, examples) -> None:
    settings = training_settings()
    ckpt = tmp_path / "run.ckpt.pt"
    config = TrainConfig(steps=6, batch=1, lr=3e-3, seed=3, checkpoint_every=2)
    whole = AdapterTrainer(train_runner, settings, config)
    whole.fit(examples[:2])

    first = AdapterTrainer(train_runner, settings, TrainConfig(steps=4, batch=1, lr=3e-3, seed=3, checkpoint_every=2))
    first.fit(examples[:2], checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["state"]["step"] == 4
    second = AdapterTrainer(train_runner, settings, config)
    second.resume(ckpt)
    # Where the first run stopped: step, losses, weights and the optimizer's moments.
    assert second.state.step == 4 and second.state.losses == first.state.losses
    assert all(torch.equal(second.adapter.state_dict()[k], v) for k, v in first.adapter.state_dict().items())
    saved, restored = first.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[p][m], restored[p][m]) for p in saved for m in ("step", "exp_avg", "exp_avg_sq"))
    state = second.fit(examples[:2], checkpoint=ckpt)
    assert state.step == 6 and torch.load(ckpt, weights_only=True)["state"]["step"] == 6
    # What the uninterrupted run did, to float precision (CPU kernels may round differently from run to run,
    # and Adam's first steps magnify that).
    np.testing.assert_allclose(state.losses, whole.state.losses, rtol=2e-3)


def test_resume_refuses_other_runs_and_foreign_files(tmp_path: Path, train_runner, examples) -> None:
    settings = training_settings()
    ckpt = tmp_path / "run.ckpt.pt"
    AdapterTrainer(train_runner, settings, TrainConfig(steps=1, batch=1, seed=3)).fit(examples[:1], checkpoint=ckpt)
    other = AdapterTrainer(train_runner, settings, TrainConfig(steps=2, batch=1, seed=4))
    with pytest.raises(TrainingError, match="from another run .*seed 3 there, 4 here"):
        other.resume(ckpt)
    with pytest.raises(TrainingError, match="nothing to resume"):
        other.resume(tmp_path / "none.ckpt.pt")
    foreign = tmp_path / "foreign.ckpt.pt"
    torch.save({"format": "something-else"}, foreign)
    with pytest.raises(TrainingError, match="is not a samsa-stream/adapter-training checkpoint"):
        other.resume(foreign)
    junk = tmp_path / "junk.ckpt.pt"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(TrainingError, match="not a readable training checkpoint"):
        other.resume(junk)


def test_bad_training_settings_are_named() -> None:
    with pytest.raises(TrainingError, match="max_clicks must be a positive integer"):
        TrainConfig(max_clicks=0).check()
    with pytest.raises(TrainingError, match="learning rate"):
        TrainConfig(lr=float("nan")).check()
    with pytest.raises(TrainingError, match="seed must be a non-negative integer"):
        TrainConfig(seed=-1).check()


@settings(max_examples=30, deadline=None)
@given(objects=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=8, unique=True),
       count=st.integers(1, 6), max_clicks=st.integers(1, 5), seed=st.integers(0, 2**31), step=st.integers(0, 10**6))
def test_sample_draws_repeat_per_seed_rank_and_step(objects, count, max_clicks, seed, step) -> None:
    draw = draw_samples(objects, count, max_clicks, seed, 0, step)
    assert draw == draw_samples(objects, count, max_clicks, seed, 0, step)
    assert len(draw) == count
    assert all((s.image, s.obj) in objects and 1 <= s.clicks <= max_clicks for s in draw)


def test_ranks_draw_different_samples() -> None:
    objects = [(i, j) for i in range(4) for j in range(3)]
    assert draw_samples(objects, 8, 3, 0, 0, 5) != draw_samples(objects, 8, 3, 0, 1, 5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_mask_loss_is_lowest_for_confident_right_logits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    target = torch.from_numpy(rng.random((6, 7)) > 0.5).float()
    logits = torch.from_numpy(rng.normal(0, 3, (6, 7))).float()
    right = (target * 2 - 1) * 20
    assert float(mask_loss(right, target)) < float(mask_loss(logits, target))
    assert float(mask_loss(-right, target)) > float(mask_loss(logits, target))
    assert float(mask_loss(logits, target)) >= 0
