"""The decoder engine: zero-initialized fusion equals plain SAM2 exactly; a trained adapter changes the
result through the skip features; adapter files are checked against the model; gradients flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samsa_stream.worker.engines import EngineError, ObjectMemory
from samsa_stream.worker.engines.decoder import DecoderEngine
from samsa_stream.worker.engines.fusion_adapter import FusionAdapter, load_adapter, save_adapter
from samsa_stream.worker.engines.rgb import RgbEngine
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import sam2_settings
from tests.worker.engines.test_rgb_fidelity import make_object

VARIANT = "sam2.1_hiera_tiny"


def _perturbed(seed: int = 0) -> FusionAdapter:
    adapter = FusionAdapter((32, 64))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (adapter.out_s0, adapter.out_s1):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.5)
    return adapter


@pytest.mark.parametrize("clicks", [
    [(30.0, 20.0, True)],
    [(30.0, 20.0, True), (61.0, 44.0, False)],
])
def test_untrained_adapter_gives_exactly_the_rgb_result(runner, clicks) -> None:
    _, frames = phantom_frames(bands=20, height=60, width=84, count=6)
    settings = sam2_settings(engine="decoder", frame_history=1)
    rgb, decoder = RgbEngine(runner, settings), DecoderEngine(runner, settings)
    obj = make_object(frames[0], clicks)
    mem_rgb, mem_dec = ObjectMemory(), ObjectMemory()
    for frame in (frames[0], frames[1], frames[4], frames[5]):  # clicked frame and followed frames
        a = rgb.segment(rgb.prepare(frame), obj, mem_rgb)
        b = decoder.segment(decoder.prepare(frame), obj, mem_dec)
        assert torch.equal(torch.from_numpy(a.logits), torch.from_numpy(b.logits)), frame.frame_id
        assert np.array_equal(a.mask, b.mask) and a.score == b.score
        assert b.similarity is not None and b.similarity.shape == frame.cube.shape[:2]
    assert any("untrained" in n for n in decoder.notices)


def test_a_trained_adapter_changes_the_masks_through_the_skip_features(runner) -> None:
    _, (frame,) = phantom_frames(bands=20, height=60, width=84, count=1)
    settings = sam2_settings(engine="decoder")
    obj = make_object(frame, [(30.0, 20.0, True)])
    plain = DecoderEngine(runner, settings)
    fused = DecoderEngine(runner, settings, _perturbed())
    a = plain.segment(plain.prepare(frame), obj, ObjectMemory())
    b = fused.segment(fused.prepare(frame), obj, ObjectMemory())
    assert np.abs(a.logits - b.logits).max() > 1e-3


def test_adapter_output_shapes_follow_the_skip_features(runner) -> None:
    adapter = FusionAdapter(runner.high_res_channels)
    g = runner.mask_size
    d0, d1 = adapter(torch.rand(1, 2, g, g))
    features = runner.embed(np.zeros((40, 50, 3), dtype=np.uint8))
    assert d0.shape == features.high_res[0].shape and d1.shape == features.high_res[1].shape
    assert not d0.any() and not d1.any()  # zero-initialized output layers


def test_forward_pass_is_differentiable_into_the_adapter(runner) -> None:
    """Training (a later issue) needs gradients from the decoder's logits back to the adapter weights."""
    _, (frame,) = phantom_frames(bands=20, height=60, width=84, count=1)
    engine = DecoderEngine(runner, sam2_settings(engine="decoder"))
    ctx = engine.prepare(frame)
    obj = make_object(frame, [(30.0, 20.0, True)])
    with torch.no_grad():
        maps = engine.spectral_maps(ctx, obj)
    adapter = FusionAdapter(runner.high_res_channels).train()
    delta = adapter(engine.adapter_input(maps))
    decoded = runner.decode(ctx.features, np.array([[30.0, 20.0]]), np.array([1]), high_res_delta=delta)
    target = torch.from_numpy(frame.labels == 1).float()
    logits = runner.upscale(decoded.low_res_raw, ctx.features.orig_hw)[0]
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    assert adapter.out_s0.weight.grad is not None and adapter.out_s0.weight.grad.abs().sum() > 0
    assert adapter.out_s1.weight.grad is not None and adapter.out_s1.weight.grad.abs().sum() > 0
    # The image embedding was computed without gradients: the encoder is out of the graph.
    assert all(p.grad is None for p in runner.model.image_encoder.parameters())
    runner.model.zero_grad(set_to_none=True)  # the shared model must leave this test as it came


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_adapter_file_round_trip(tmp_path: Path, suffix: str) -> None:
    adapter = _perturbed(3)
    path = tmp_path / f"adapter{suffix}"
    save_adapter(path, adapter, VARIANT)
    loaded = load_adapter(path, VARIANT, (32, 64))
    for key, value in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_decoder_engine_loads_the_configured_adapter(tmp_path: Path, runner) -> None:
    path = tmp_path / "adapter.safetensors"
    save_adapter(path, _perturbed(5), VARIANT)
    engine = DecoderEngine.build(sam2_settings(engine="decoder", adapter=path))
    assert torch.equal(engine.adapter.out_s0.weight.cpu(), _perturbed(5).out_s0.weight)
    assert not any("untrained" in n for n in engine.notices)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_adapter_for_another_sam2_variant_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"adapter{suffix}"
    save_adapter(path, FusionAdapter(), "sam2.1_hiera_large")
    with pytest.raises(EngineError, match="trained with 'sam2.1_hiera_large', but the model is 'sam2.1_hiera_tiny'"):
        load_adapter(path, VARIANT, (32, 64))


def test_bad_adapter_files(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        load_adapter(tmp_path / "none.pt", VARIANT, (32, 64))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(EngineError, match="not readable"):
        load_adapter(junk, VARIANT, (32, 64))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}, "format": "something-else"}, foreign)
    with pytest.raises(EngineError, match="is not a samsa-stream/decoder-adapter file"):
        load_adapter(foreign, VARIANT, (32, 64))
    future = tmp_path / "future.pt"
    torch.save({"format": "samsa-stream/decoder-adapter", "version": 99, "state_dict": {}}, future)
    with pytest.raises(EngineError, match="format version 99; this node reads version 1"):
        load_adapter(future, VARIANT, (32, 64))
    wrong = tmp_path / "wrong.pt"
    save_adapter(wrong, FusionAdapter((16, 64)), VARIANT)
    with pytest.raises(EngineError, match=r"outputs \(16, 64\) channels"):
        load_adapter(wrong, VARIANT, (32, 64))
