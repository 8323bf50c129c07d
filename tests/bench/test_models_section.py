"""``bench`` section ``models``: several models side by side, one that does not load skipped with the reason."""

from __future__ import annotations

from samsa_stream.bench import models
from samsa_stream.bench.options import BenchFrames, BenchOptions


def test_a_model_that_does_not_load_is_skipped_and_the_others_still_run() -> None:
    options = BenchOptions(size=(32, 48, 8), frames=2, image_size=128, random_weights=True,
                           engines=("rgb", "prompt"), models=("sam2.1_hiera_t", "no_such_config"))
    sections = models.run(options, BenchFrames.make(options.size, 2))
    assert set(sections) == {"models", "models_no_such_config"}
    first, failed = sections["models"], sections["models_no_such_config"]
    assert not first.skipped and first.ratios["prompt_vs_predictor"] is not None
    assert {"predictor", "rgb", "rgb tracked", "prompt second object", "prompt +1 busy"} <= set(first.timings)
    assert first.figures["weights"] == "random weights (seed 0)"
    assert failed.skipped is not None and "no_such_config" in failed.skipped
