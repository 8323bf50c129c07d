"""``samsa-stream worker``: segments the freshest frame for every clicked object."""

from __future__ import annotations

import argparse

from ..cli import common_options, setting_flag
from ._process import run_process


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="segment clicked objects on the freshest frame",
                       description="Subscribe to frames, keep the prompts (clicks) of every stream and object, answer "
                                   "prompt requests (ROUTER, endpoints.prompts), segment each new frame with the "
                                   "configured engine and push results to the publisher. Older frames are dropped "
                                   "and counted, never queued.")
    common_options(p)
    engine_flags(p)
    setting_flag(p, "--state-file", "worker.state_file", "persist prompts here so they survive a restart")
    p.set_defaults(handler=_run)


def engine_flags(p: argparse.ArgumentParser) -> None:
    """The engine and model flags the worker and the offline ``segment`` command share."""
    setting_flag(p, "--engine", "worker.engine", "spectral (default, no weights), rgb, prompt or decoder")
    model_flags(p)


def model_flags(p: argparse.ArgumentParser) -> None:
    """The SAM2 model flags (checkpoint, random weights, input size, device, adapter)."""
    setting_flag(p, "--device", "worker.device", "auto, cpu or cuda")
    setting_flag(p, "--checkpoint", "worker.checkpoint", "path to an official SAM2/SAM2.1 checkpoint (.pt)")
    setting_flag(p, "--sam2-config", "worker.sam2_config", "override the config chosen from the checkpoint")
    setting_flag(p, "--random-weights", "worker.random_weights",
                 "tests only: SAM2 with seeded random weights (masks are meaningless)", switch=True)
    setting_flag(p, "--seed", "worker.seed", "seed of --random-weights and of train-adapter's sampling (default 0)")
    setting_flag(p, "--image-size", "worker.image_size", "SAM2 input size, a multiple of 32 (default 1024)")
    setting_flag(p, "--adapter", "worker.adapter", "decoder engine: fusion adapter weights")


def _run(args: argparse.Namespace) -> int:
    from ..worker.process import run_worker

    return run_process("worker", args, run_worker)
