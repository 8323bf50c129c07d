"""Model handling: variant detection, checkpoints that fit or do not fit, random weights only on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samsa_stream.worker.engines import EngineError
from samsa_stream.worker.engines.sam2_model import (
    Sam2Variant,
    build_model,
    load_sam2,
    variant_from_name,
    variant_from_state_dict,
)
from samsa_stream.worker.engines.sam2_runner import Sam2Runner
from tests.worker.engines.conftest import IMAGE_SIZE, sam2_settings


@pytest.mark.parametrize("name, version, size", [
    ("sam2_hiera_tiny.pt", "sam2", "tiny"),
    ("sam2_hiera_small.pt", "sam2", "small"),
    ("/ckpt/sam2.1_hiera_base_plus.pt", "sam2.1", "base_plus"),
    ("sam2.1_hiera_large.pt", "sam2.1", "large"),
    ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1", "base_plus"),
    ("sam2.1_hiera_t", "sam2.1", "tiny"),
    ("SAM2.1_Hiera_Small-finetuned.pt", "sam2.1", "small"),
])
def test_variant_from_official_names(name: str, version: str, size: str) -> None:
    assert variant_from_name(name) == Sam2Variant(version, size)


@pytest.mark.parametrize("name", ["model.pt", "sam2_hiera_huge.pt", "sam3_hiera_tiny.pt"])
def test_unofficial_names_are_not_guessed(name: str) -> None:
    assert variant_from_name(name) is None


def test_variant_config_names_exist_in_the_sam2_package() -> None:
    import sam2

    root = Path(sam2.__file__).parent
    for version in ("sam2", "sam2.1"):
        for size in ("tiny", "small", "base_plus", "large"):
            assert (root / Sam2Variant(version, size).config).is_file()


@pytest.mark.parametrize("config, expected", [
    ("sam2.1_hiera_t", Sam2Variant("sam2.1", "tiny")),
    ("sam2_hiera_t", Sam2Variant("sam2", "tiny")),
    ("sam2.1_hiera_s", Sam2Variant("sam2.1", "small")),
])
def test_variant_from_tensor_shapes(config: str, expected: Sam2Variant) -> None:
    model = build_model(config, IMAGE_SIZE, seed=0)
    assert variant_from_state_dict(model.state_dict()) == expected


def test_state_dict_of_another_network_is_named_as_such() -> None:
    with pytest.raises(EngineError, match="not a SAM2 model"):
        variant_from_state_dict({"conv.weight": torch.zeros(3, 3)})
    with pytest.raises(EngineError, match="embed dim 64 and 5 blocks, which is no official SAM2 model"):
        variant_from_state_dict({"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(64, 3, 7, 7),
                                 **{f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(5)}})


@pytest.mark.parametrize("size", [64, 128, 192])
def test_feature_sizes_follow_the_image_size(size: int) -> None:
    runner = Sam2Runner(load_sam2(sam2_settings(image_size=size)))
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    features = runner.embed(rgb)
    assert features.image_embed.shape == (1, 256, size // 16, size // 16)
    assert features.high_res[0].shape == (1, 32, size // 4, size // 4)
    assert features.high_res[1].shape == (1, 64, size // 8, size // 8)
    assert runner.mask_size == size // 4
    with torch.no_grad():
        decoded = runner.decode(features, np.array([[10.0, 20.0]]), np.array([1]), multimask=True)
    assert decoded.low_res_raw.shape == (1, 3, size // 4, size // 4)
    assert runner.upscale(decoded.low_res_raw, features.orig_hw).shape == (3, 50, 70)


def _save(tmp_path: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return build_model("sam2.1_hiera_t", IMAGE_SIZE, seed=11).state_dict()


def test_official_checkpoint_layout_loads_with_its_weights(tmp_path: Path, tiny_state) -> None:
    path = _save(tmp_path, "sam2.1_hiera_tiny.pt", tiny_state)
    loaded = load_sam2(sam2_settings(checkpoint=path, random_weights=False))
    assert loaded.variant == Sam2Variant("sam2.1", "tiny")
    assert not loaded.random_weights
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, tiny_state[key]), key


def test_checkpoint_without_a_telling_name_is_detected_from_its_tensors(tmp_path: Path, tiny_state) -> None:
    path = _save(tmp_path, "finetuned-epoch3.pt", tiny_state)
    assert load_sam2(sam2_settings(checkpoint=path, random_weights=False)).variant.name == "sam2.1_hiera_tiny"


def test_checkpoint_named_like_another_variant_fails_clearly(tmp_path: Path, tiny_state) -> None:
    path = _save(tmp_path, "sam2.1_hiera_large.pt", tiny_state)
    with pytest.raises(EngineError, match=r"named like sam2.1_hiera_large but its tensors are sam2.1_hiera_tiny "
                                          r"\(Hiera trunk: embed dim 96, 12 blocks\)"):
        load_sam2(sam2_settings(checkpoint=path))


def test_config_override_that_does_not_fit_the_checkpoint_fails_clearly(tmp_path: Path, tiny_state) -> None:
    path = _save(tmp_path, "sam2.1_hiera_tiny.pt", tiny_state)
    with pytest.raises(EngineError, match=r"is sam2.1_hiera_tiny .* but config 'sam2.1_hiera_l' is sam2.1_hiera_large "
                                          r"\(Hiera trunk: embed dim 144, 48 blocks\)"):
        load_sam2(sam2_settings(checkpoint=path, sam2_config="sam2.1_hiera_l"))


def test_sam2_checkpoint_against_a_sam21_config_yaml_lists_the_mismatch(tmp_path: Path) -> None:
    import sam2

    sam2_state = build_model("sam2_hiera_t", IMAGE_SIZE, seed=0).state_dict()
    path = _save(tmp_path, "weights.pt", sam2_state)
    yaml = tmp_path / "custom.yaml"  # a name that says nothing, so only the tensor check can catch it
    yaml.write_text((Path(sam2.__file__).parent / "configs/sam2.1/sam2.1_hiera_t.yaml").read_text())
    with pytest.raises(EngineError, match=r"does not fit config .*custom.yaml.*missing \(e.g. no_obj_embed_spatial"):
        load_sam2(sam2_settings(checkpoint=path, sam2_config=str(yaml)))


def test_truncated_checkpoint_names_what_is_missing(tmp_path: Path, tiny_state) -> None:
    state = {k: v for k, v in tiny_state.items() if not k.startswith("sam_mask_decoder.")}
    path = _save(tmp_path, "sam2.1_hiera_tiny.pt", state)
    with pytest.raises(EngineError, match=r"does not fit config .*: \d+ missing \(e.g. sam_mask_decoder\."):
        load_sam2(sam2_settings(checkpoint=path))


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a checkpoint", "not a readable torch checkpoint"),
    ({"optimizer": {"lr": 1}}, "holds no state dict"),
])
def test_unreadable_checkpoints(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(EngineError, match=message):
        load_sam2(sam2_settings(checkpoint=path))


def test_random_weights_are_never_the_default() -> None:
    assert sam2_settings(random_weights=False).random_weights is False
    with pytest.raises(EngineError, match="needs worker.checkpoint"):
        load_sam2(sam2_settings(random_weights=False))


def test_random_weights_are_seeded() -> None:
    a = build_model("sam2.1_hiera_t", IMAGE_SIZE, seed=3).state_dict()
    b = build_model("sam2.1_hiera_t", IMAGE_SIZE, seed=3).state_dict()
    c = build_model("sam2.1_hiera_t", IMAGE_SIZE, seed=4).state_dict()
    key = "image_encoder.trunk.patch_embed.proj.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_cuda_requested_without_cuda_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError, match="no CUDA device"):
        load_sam2(sam2_settings(device="cuda"))


def test_image_size_must_be_a_multiple_of_32() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="multiple of 32"):
        sam2_settings(image_size=100)
