"""The SAM2 engines' device path, exercised on the CPU: uploads, the torch spectral-angle loop an
accelerator runs, batched image-encoder runs across streams, warm-up before readiness, compilation
settings. Tests marked ``cuda`` run only where a CUDA device is present."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from samsa_stream import supervision
from samsa_stream.protocol import ClickPrompt
from samsa_stream.settings import WorkerSettings, load_settings
from samsa_stream.spectral import angles as np_angles
from samsa_stream.worker.core import Worker
from samsa_stream.worker.engines import ObjectMemory, device, torch_angles
from samsa_stream.worker.engines.base import WARMUP_STREAM, Engine, FrameContext, synthetic_frames
from samsa_stream.worker.engines.decoder import DecoderEngine
from samsa_stream.worker.engines.device import Uploader
from samsa_stream.worker.engines.prompt import PromptEngine
from samsa_stream.worker.engines.rgb import RgbEngine
from samsa_stream.worker.engines.sam2_model import load_sam2
from samsa_stream.worker.engines.sam2_runner import Sam2Runner
from tests.conftest import phantom_frames
from tests.worker.engines.conftest import IMAGE_SIZE, sam2_settings
from tests.worker.engines.test_rgb_fidelity import make_object
from tests.worker.test_loop import LoopUnderTest, StubEngine

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # inside sam2
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
finite = st.one_of(st.just(0.0), st.floats(min_value=2.0 ** -10, max_value=10.0, width=32))


@pytest.fixture(scope="module")
def runner() -> Sam2Runner:
    return Sam2Runner(load_sam2(sam2_settings()))


# -- uploads ---------------------------------------------------------------------------------------
def test_cpu_upload_is_a_passthrough_that_keeps_float16() -> None:
    uploader = Uploader(torch.device("cpu"))
    cube = np.random.default_rng(0).random((5, 6, 7)).astype(np.float16)
    pending = uploader.start(cube)
    tensor = pending.get()
    assert tensor.dtype == torch.float16 and np.shares_memory(tensor.numpy(), cube)
    assert not uploader.overlaps and uploader.uploads == 0  # no staging copy on the CPU


@cuda
def test_cuda_upload_equals_the_source_and_reuses_staging_buffers() -> None:
    uploader = Uploader(torch.device("cuda"))
    assert uploader.overlaps
    rng = np.random.default_rng(1)
    cubes = [rng.random((40, 30, 9)).astype(dtype) for dtype in (np.float16, np.float32, np.float16, np.float16)]
    pendings = [uploader.start(c) for c in cubes]
    for cube, pending in zip(cubes, pendings, strict=True):
        got = pending.get()
        assert got.device.type == "cuda" and got.dtype == torch.from_numpy(cube).dtype
        np.testing.assert_array_equal(got.cpu().numpy(), cube)
    assert uploader.uploads == 4 and len(uploader._slots) == 2  # one set of staging buffers per shape and dtype


# -- the torch spectral-angle loop an accelerator runs --------------------------------------------
@settings(max_examples=40, deadline=None)
@given(data=st.data(), bands=st.integers(1, 40), refs=st.integers(1, 4), half=st.booleans(),
       block=st.sampled_from([1, 7, 65536]))
def test_device_loop_on_cpu_matches_numpy(data: st.DataObject, bands: int, refs: int, half: bool, block: int) -> None:
    cube = data.draw(arrays(np.float32, (5, 6, bands), elements=finite))
    if half:
        cube = cube.astype(np.float16)
    references = data.draw(arrays(np.float32, (refs, bands), elements=st.floats(0.125, 10.0, width=32)))
    expected = np_angles.spectral_angles(cube.astype(np.float32), references)
    tensor = torch.from_numpy(cube)
    spectra = torch_angles.PixelSpectra.of(tensor, numpy_on_cpu=False)
    assert spectra.host is None and spectra.pixels.dtype == tensor.dtype  # the torch loop, float16 kept
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_angles, "CPU_BLOCK", block)  # several blocks, and a block smaller than a row
        got = spectra.angles(references).numpy()
        again = spectra.angles(references[:1]).numpy()  # the second map reuses the norms of the first
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3)
    np.testing.assert_allclose(again, expected[..., :1], rtol=0, atol=2e-3)
    assert got.dtype == np.float32


def test_engine_spectra_keep_a_float16_cube_and_match_the_numpy_maps(runner: Sam2Runner) -> None:
    _, (frame,) = phantom_frames(bands=20, height=40, width=52, count=1)
    frame.cube = frame.cube.astype(np.float16)
    engine = PromptEngine(runner, sam2_settings(engine="prompt"))
    ctx = engine.prepare(frame)
    assert ctx.cube is not None  # the upload started with the image encoder's run
    spectra = ctx.pixel_spectra(runner.device)
    ref = frame.cube[10, 12].astype(np.float32)[None]
    np.testing.assert_allclose(spectra.angles(ref).numpy(),
                               np_angles.spectral_angles(frame.cube.astype(np.float32), ref), atol=2e-3)


# -- several streams, one image-encoder run ---------------------------------------------------------
def click(worker: Worker, stream_id: str) -> Any:
    return worker.handle_prompt(ClickPrompt(stream_id=stream_id, object_id=1, x=20.0, y=20.0, positive=True))


def three_streams() -> list[Any]:
    """Newest frames of three cameras of different sizes."""
    out = []
    for i, (h, w) in enumerate([(60, 84), (48, 64), (60, 84)]):
        _, frames = phantom_frames(bands=16, height=h, width=w, count=1, start=i, stream_id=f"cam{i}")
        out.append(frames[0])
    return out


@pytest.mark.parametrize("engine_class", [RgbEngine, PromptEngine])
def test_batched_prepare_equals_one_frame_at_a_time(runner: Sam2Runner, engine_class: type) -> None:
    frames = three_streams()
    batched = engine_class(runner, sam2_settings(batch_streams=4))
    single = engine_class(runner, sam2_settings(batch_streams=1))
    embeds, batches = runner.embeds, runner.batches
    together = batched.prepare_many(frames)
    assert runner.embeds - embeds == 3 and runner.batches - batches == 1  # one encoder run for the three
    assert [batched.prepare(f) for f in frames] == together  # segment finds them prepared: no further run
    assert runner.embeds - embeds == 3
    alone = [single.prepare(f) for f in frames]
    assert runner.batches - batches == 1
    for a, b in zip(together, alone, strict=True):
        assert a.features.orig_hw == b.features.orig_hw
        for x, y in [(a.features.image_embed, b.features.image_embed),
                     *zip(a.features.high_res, b.features.high_res, strict=True),
                     *zip(a.tracked.vision_feats, b.tracked.vision_feats, strict=True),
                     *zip(a.tracked.vision_pos, b.tracked.vision_pos, strict=True)]:
            assert x.shape == y.shape
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    for frame, a, b in zip(frames, together, alone, strict=True):
        h, w = frame.cube.shape[:2]
        obj = make_object(frame, [(w / 3, h / 2, True), (2 * w / 3, h / 3, False)])
        got = batched.segment(a, obj, ObjectMemory())
        want = single.segment(b, obj, ObjectMemory())
        assert got.logits is not None and want.logits is not None
        np.testing.assert_allclose(got.logits, want.logits, rtol=0, atol=1e-3)
        clear = np.abs(want.logits) > 1e-2  # a mask may differ only where the logit is zero to float rounding
        np.testing.assert_array_equal(got.mask[clear], want.mask[clear])
        assert got.mask.any()  # not vacuous: there is a mask to compare
        assert got.score == pytest.approx(want.score, abs=1e-4)


def test_worker_prepares_ready_streams_together(runner: Sam2Runner) -> None:
    settings = load_settings(overrides={"worker": {"engine": "rgb", "random_weights": True, "image_size": IMAGE_SIZE,
                                                   "device": "cpu", "batch_streams": 2}})
    worker = Worker(settings, engine=RgbEngine(runner, settings.worker))
    frames = three_streams()
    for frame in frames:
        worker.accept(frame)
        assert click(worker, frame.stream_id).ok
    embeds, batches = runner.embeds, runner.batches
    dirty = worker.dirty_streams()
    assert worker.prepare_streams(dirty) == 3
    assert runner.batches - batches == 1 and runner.embeds - embeds == 3  # (cam0, cam1) together, then cam2
    results = [worker.segment(sid) for sid in dirty]
    assert runner.embeds - embeds == 3  # segmenting found every frame prepared
    assert all(len(r.objects) == 1 for r in results)
    assert worker.stats.counters["frames_batched"] == 3


def test_batching_off_or_without_objects_prepares_nothing_together(runner: Sam2Runner) -> None:
    settings = load_settings(overrides={"worker": {"engine": "rgb", "random_weights": True, "image_size": IMAGE_SIZE,
                                                   "device": "cpu", "batch_streams": 1}})
    worker = Worker(settings, engine=RgbEngine(runner, settings.worker))
    for frame in three_streams():
        worker.accept(frame)
        assert click(worker, frame.stream_id).ok
    assert worker.prepare_streams(worker.dirty_streams()) == 0
    on = load_settings(overrides={"worker": {"engine": "rgb", "random_weights": True, "image_size": IMAGE_SIZE,
                                             "device": "cpu"}})
    bare = Worker(on, engine=RgbEngine(runner, on.worker))
    for frame in three_streams():
        bare.accept(frame)  # no objects: nothing to segment, so no image-encoder run
    embeds = runner.embeds
    assert bare.prepare_streams(bare.dirty_streams()) == 0 and runner.embeds == embeds


class FailingBatchEngine(StubEngine):
    batch_prepare = True

    def prepare_many(self, frames: list[Any]) -> list[FrameContext]:
        raise RuntimeError("batch fault")


def test_failed_batch_falls_back_to_one_frame_at_a_time() -> None:
    settings = load_settings()
    worker = Worker(settings, engine=FailingBatchEngine())
    for frame in three_streams():
        worker.accept(frame)
        assert click(worker, frame.stream_id).ok
    dirty = worker.dirty_streams()
    assert worker.prepare_streams(dirty) == 0
    assert worker.stats.counters["batch_prepare_failed"] == 1
    assert all(len(worker.segment(sid).objects) == 1 for sid in dirty)


# -- warm-up ---------------------------------------------------------------------------------------
def test_sam2_warm_up_runs_the_image_encoder_and_decoder_then_forgets(runner: Sam2Runner) -> None:
    settings = load_settings(overrides={"worker": {"engine": "rgb", "random_weights": True, "image_size": IMAGE_SIZE,
                                                   "device": "cpu", "warmup_frames": 2}})
    engine = RgbEngine(runner, settings.worker)
    worker = Worker(settings, engine=engine)
    embeds, decodes = runner.embeds, runner.decodes
    assert worker.warm_up() == 2
    assert runner.embeds - embeds == 2 and runner.decodes - decodes == 2  # a click, then a tracked frame
    assert worker.stats.counters["warmup_frames"] == 2
    assert WARMUP_STREAM not in engine._frames and not worker.streams


@pytest.mark.parametrize("engine_class", [PromptEngine, DecoderEngine])
def test_spectral_sam2_engines_warm_up_their_spectral_path(runner: Sam2Runner, engine_class: type) -> None:
    engine = engine_class(runner, sam2_settings())
    decodes = runner.decodes
    assert engine.warm_up(2) == 2
    assert runner.decodes - decodes == 2 and WARMUP_STREAM not in engine._frames


def test_no_warm_up_when_set_to_zero(runner: Sam2Runner) -> None:
    settings = load_settings(overrides={"worker": {"warmup_frames": 0}})
    embeds = runner.embeds
    assert Worker(settings, engine=RgbEngine(runner, settings.worker)).warm_up() == 0
    assert runner.embeds == embeds


def test_synthetic_frames_are_valid_frames() -> None:
    for frame in synthetic_frames(3):
        frame.validate()


class WarmingEngine(StubEngine):
    """Counts its warm-up frames."""

    def __init__(self) -> None:
        super().__init__()
        self.warmed = 0

    def warm_up(self, frames: int) -> int:
        self.warmed += frames
        return frames


class RecordingNotifier(supervision.Notifier):
    """Remembers what the engine had been through when the worker said it was ready."""

    def __init__(self, engine: WarmingEngine) -> None:
        super().__init__()
        self.engine = engine
        self.warmed_at_ready: list[int] = []

    def ready(self, status: str | None = None) -> None:
        self.warmed_at_ready.append(self.engine.warmed)


def test_worker_warms_up_before_it_reports_ready() -> None:
    engine = WarmingEngine()
    notifier = RecordingNotifier(engine)
    supervision.install(notifier)
    try:
        loop = LoopUnderTest(engine=engine, worker={"warmup_frames": 3})  # returns once the loop answers
        try:
            assert notifier.warmed_at_ready == [3]
            assert loop.counters()["warmup_frames"] == 3
        finally:
            loop.close()
    finally:
        supervision.install(None)


class BrokenWarmUp(StubEngine):
    def warm_up(self, frames: int) -> int:
        raise RuntimeError("no kernel for this")


def test_failed_warm_up_is_counted_and_the_worker_serves() -> None:
    worker = Worker(load_settings(), engine=BrokenWarmUp())
    assert worker.warm_up() == 0
    assert worker.stats.counters["warmup_failed"] == 1


def test_engines_without_kernels_skip_warm_up() -> None:
    engine: Engine = StubEngine()
    assert engine.warm_up(5) == 0


# -- compilation -----------------------------------------------------------------------------------
def test_compile_settings_default_off_and_are_checked() -> None:
    cfg = WorkerSettings()
    assert (cfg.compile_image_encoder, cfg.compile_memory_attention) == (False, False)
    assert (cfg.batch_streams, cfg.warmup_frames, cfg.compile_mode) == (4, 1, "default")
    with pytest.raises(ValidationError, match="compile_mode"):
        WorkerSettings(compile_mode="fastest")
    with pytest.raises(ValidationError, match="batch_streams"):
        WorkerSettings(batch_streams=0)


def test_cuda_graphs_are_assumed_only_for_inductor_graph_modes_on_cuda() -> None:
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert device.uses_cuda_graphs(gpu, ["image_encoder"], "reduce-overhead", "inductor")
    assert device.uses_cuda_graphs(gpu, ["image_encoder"], "max-autotune", "inductor")
    assert not device.uses_cuda_graphs(gpu, ["image_encoder"], "max-autotune-no-cudagraphs", "inductor")
    assert not device.uses_cuda_graphs(gpu, ["image_encoder"], "reduce-overhead", "eager")
    assert not device.uses_cuda_graphs(gpu, [], "reduce-overhead", "inductor")
    assert not device.uses_cuda_graphs(cpu, ["image_encoder"], "reduce-overhead", "inductor")


def test_with_cuda_graphs_kept_embeddings_are_copied_out_of_the_graph_buffers(
        runner: Sam2Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a CUDA-graph replay would overwrite (the encoder's output buffers) is cloned before it is kept."""
    graphed = Sam2Runner(dataclasses.replace(runner.loaded, cuda_graphs=True))
    buffers = runner.model.forward_image(runner.preprocess(synthetic_frames(1)[0].rgb))
    steps: list[int] = []
    monkeypatch.setattr(graphed.model, "forward_image", lambda batch: buffers)
    monkeypatch.setattr("samsa_stream.worker.engines.sam2_runner.graph_step", lambda: steps.append(1))
    out = graphed.encode(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert steps == [1]
    for kept, buffer in zip(out["backbone_fpn"], buffers["backbone_fpn"], strict=True):
        assert torch.equal(kept, buffer) and kept.data_ptr() != buffer.data_ptr()
    assert runner.encode(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))["backbone_fpn"][0].shape[0] == 1


def test_compiled_modules_build_and_match_on_cpu_with_the_eager_backend(runner: Sam2Runner) -> None:
    """Wiring only: the 'eager' backend traces the modules with dynamo but generates no kernels."""
    torch._dynamo.reset()
    compiled = Sam2Runner(load_sam2(sam2_settings(compile_image_encoder=True, compile_memory_attention=True,
                                                  compile_backend="eager")))
    try:
        assert compiled.loaded.compiled == ("image_encoder", "memory_attention")
        assert compiled.model.state_dict().keys() == runner.model.state_dict().keys()  # checkpoints still fit
        settings = load_settings(overrides={"worker": {"engine": "rgb", "random_weights": True,
                                                       "image_size": IMAGE_SIZE, "device": "cpu",
                                                       "warmup_frames": 1}})
        engine = RgbEngine(compiled, settings.worker)
        assert engine.warm_up(1) == 2  # a compiled memory attention runs from the second frame: warmed too
        frame = synthetic_frames(1)[0]
        got = compiled.embed(frame.rgb).image_embed
        torch.testing.assert_close(got, runner.embed(frame.rgb).image_embed, rtol=1e-4, atol=1e-4)
    finally:
        torch._dynamo.reset()


@cuda
def test_inductor_compiled_encoder_on_cuda_matches() -> None:
    torch._dynamo.reset()
    try:
        plain = Sam2Runner(load_sam2(sam2_settings(device="cuda")))
        fast = Sam2Runner(load_sam2(sam2_settings(device="cuda", compile_image_encoder=True,
                                                  compile_mode="reduce-overhead")))
        frame = synthetic_frames(1)[0]
        for _ in range(3):  # compile, record the CUDA graph, replay it
            got = fast.embed(frame.rgb).image_embed.float()
        torch.testing.assert_close(got, plain.embed(frame.rgb).image_embed.float(), rtol=5e-2, atol=5e-2)
    finally:
        torch._dynamo.reset()


@cuda
def test_cuda_batched_prepare_equals_one_at_a_time() -> None:
    gpu = Sam2Runner(load_sam2(sam2_settings(device="cuda")))
    frames = three_streams()
    together = RgbEngine(gpu, sam2_settings(device="cuda")).prepare_many(frames)
    alone = [RgbEngine(gpu, sam2_settings(device="cuda", batch_streams=1)).prepare(f) for f in frames]
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a.features.image_embed.float(), b.features.image_embed.float(),
                                   rtol=2e-2, atol=2e-2)  # bfloat16 autocast
