"""``samsa-stream train-adapter`` end to end: a phantom dataset in, an adapter file that records how it was
made out; --resume, bad use named on one line, and two torchrun processes on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from samsa_stream.cli import main
from samsa_stream.worker.engines.fusion_adapter import load_adapter, read_adapter_info
from tests.training.conftest import SIZE, write_phantom_dataset

VARIANT = "sam2.1_hiera_tiny"
MODEL = ["--random-weights", "--image-size", "128", "--device", "cpu"]


def _args(data: Path, out: Path, *extra: str, steps: int = 4, seed: int = 5) -> list[str]:
    return ["train-adapter", str(data), "--shots", "2", "--out", str(out), "--steps", str(steps), "--batch", "1",
            "--val-images", "1", "--val-every", "2", "--val-clicks", "2", "--checkpoint-every", "2",
            "--seed", str(seed), "--quiet", *MODEL, *extra]


def _summary(capsys: pytest.CaptureFixture[str]) -> dict:
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_train_adapter_writes_an_adapter_that_records_its_training(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = write_phantom_dataset(tmp_path / "phantoms", 4)
    out = tmp_path / "models" / "adapter.safetensors"
    assert main(_args(data, out)) == 0
    summary = _summary(capsys)
    assert summary["out"] == str(out) and summary["steps"] == 4 and not summary["stopped_early"]
    assert summary["train_loss_first"] > 0 and summary["train_loss_last"] > 0
    assert 0 <= summary["val_dice_untrained"] <= summary["val_dice_best"] <= 1
    info = read_adapter_info(out)
    assert info["dataset"] == "phantoms" and info["shots"] == 2 and len(info["train_images"]) == 2
    assert len(info["val_images"]) == 1 and not set(info["val_images"]) & set(info["train_images"])
    assert info["random_weights"] is True and info["sam2_weights"] == "random weights (seed 5)"
    assert info["seed"] == 5 and info["steps"] == 4 and info["image_size"] == 128 and info["max_clicks"] == 3
    assert info["val_dice"] == summary["val_dice_best"] and info["processes"] == 1
    assert load_adapter(out, VARIANT, (32, 64)).info == info
    assert Path(f"{out}.ckpt.pt").is_file()

    # --resume with more steps goes on from step 4; the same shots are drawn again from the seed.
    assert main(_args(data, out, "--resume", steps=6)) == 0
    assert _summary(capsys)["steps"] == 6
    assert read_adapter_info(out)["train_images"] == info["train_images"]

    # The checkpoint of one run does not resume another.
    assert main(_args(data, out, "--resume", seed=6)) == 1
    err = capsys.readouterr().err
    assert "train-adapter: error:" in err and "is from another run" in err and "seed 5 there, 6 here" in err

    # An existing adapter is where training starts (fine-tuning); the new file says so.
    again = tmp_path / "again.pt"
    assert main(_args(data, again, "--adapter", str(out), steps=1)) == 0
    capsys.readouterr()
    assert read_adapter_info(again)["initial_adapter"] == str(out)


def test_bad_use_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_phantom_dataset(tmp_path / "phantoms", 3)
    cases = [
        (_args(data, tmp_path / "adapter.npz"), "--out must name a .safetensors or .pt file"),
        ([*_args(data, tmp_path / "a.pt"), "--shots", "9"], "--shots 9 is more than dataset phantoms holds (3 "),
        ([a for a in _args(data, tmp_path / "a.pt") if a != "--random-weights"],
         "train-adapter needs --checkpoint PATH"),
        ([*_args(data, tmp_path / "a.pt"), "--max-clicks", "0"], "max_clicks must be a positive integer"),
        (_args(data, tmp_path / "a.pt", "--resume"), "nothing to resume"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        assert message in capsys.readouterr().err, argv


def test_images_without_objects_do_not_count_as_shots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_phantom_dataset(tmp_path / "phantoms", 3)
    with np.load(data / "img0.npz") as held:
        np.savez(data / "img0.npz", cube=held["cube"], wavelengths_nm=held["wavelengths_nm"],
                 labels=np.zeros((SIZE, SIZE), dtype=np.int32))
    assert main([*_args(data, tmp_path / "a.pt"), "--shots", "3"]) == 1
    assert "--shots 3, but dataset phantoms has only 2 image(s) with objects (3 images, 1 without objects)" \
        in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with np.load(data / "img0.npz") as held:
        np.savez(empty / "blank.npz", **held)
    assert main([*_args(empty, tmp_path / "a.pt"), "--shots", "1"]) == 1
    assert "dataset empty has no image with objects" in capsys.readouterr().err


@pytest.mark.slow
def test_two_torchrun_processes_train_one_adapter(tmp_path: Path) -> None:
    data = write_phantom_dataset(tmp_path / "phantoms", 3)
    out = tmp_path / "adapter.pt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMSA_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    argv = _args(data, out, steps=2)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "samsa_stream", *argv], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # rank 0 alone prints it
    assert summary["steps"] == 2 and len(result.stdout.strip().splitlines()) == 1
    info = read_adapter_info(out)
    assert info["processes"] == 2 and info["steps"] == 2 and info["shots"] == 2
    assert load_adapter(out, VARIANT, (32, 64)).out_s0.weight.abs().max() > 0
