"""``samsa-stream replay``: a recorded session (or a capture with a click script) through a node, in lockstep;
``--check`` compares the new masks with the recorded ones (docs/replay.md)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..cli import common_options, setting_flag
from ..recording.check import CHECK_FAILED, DEFAULT_MIN_DICE
from ..recording.replay import DEFAULT_TIMEOUT_S
from .worker import model_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a recorded session (.mcap) or a capture through a node; --check "
                                      "compares the masks with the recording",
                       description="Feed the recorded frames into a node and send the recorded prompts again where "
                                   "they were made, in lockstep: each frame the worker segmented live is sent and "
                                   "its result awaited; each prompt is re-sent and its reply and refresh awaited. A "
                                   "deterministic engine reproduces the recorded masks exactly. By default the "
                                   "replay runs its own worker and publisher on private endpoints (--engine, "
                                   "--checkpoint and --set change them: a regression test for a model or a "
                                   "setting); --node existing feeds the node the endpoint settings name, binding "
                                   "its frame endpoint as the ingest does (stop that node's ingest first). INPUT "
                                   "may also be any capture file or folder the ingest reads, with prompts from "
                                   f"--script. With --check, exits {CHECK_FAILED} when an object's mean DICE is "
                                   "below --min-dice or a recorded result was not reproduced.")
    common_options(p)
    p.add_argument("input", type=Path, help="SESSION.mcap, or a capture file or folder")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0,
                      help="send frames at this multiple of the recorded pace (default 1: as recorded)")
    pace.add_argument("--fast", action="store_true", help="as fast as the node takes them")
    pace.add_argument("--step", action="store_true", help="wait for Enter on stdin before each frame")
    p.add_argument("--check", action="store_true", help="compare the replayed masks with the recorded ones")
    p.add_argument("--min-dice", type=float, default=DEFAULT_MIN_DICE,
                   help=f"--check fails when an object's mean DICE is below this (default {DEFAULT_MIN_DICE})")
    p.add_argument("--report", type=Path, help="--check: write report.json, report.md and worst.png here "
                                               "(and the private node's logs)")
    p.add_argument("--script", type=Path, help="a capture's prompts: a TOML or JSON click script (docs/replay.md)")
    p.add_argument("--node", choices=("private", "existing"), default="private",
                   help="private: own worker and publisher (default); existing: the node of the endpoint settings")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds to wait for one result before counting it missing (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    setting_flag(p, "--engine", "worker.engine", "segmentation engine of the private worker")
    model_flags(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from ..cli import overrides_from, settings_from
    from ..errors import CommandError
    from ..recording.reader import Recording, is_recording
    from ..recording.script import load_script
    from ..runtime import setup_logging

    settings = settings_from(args)  # every override checked before anything starts
    setup_logging(settings.log.level, "replay", settings.log.format)
    if args.speed <= 0:
        raise CommandError(f"--speed must be above 0, got {args.speed}")
    if args.timeout <= 0:
        raise CommandError(f"--timeout must be above 0 seconds, got {args.timeout}")
    if not args.input.exists():
        raise CommandError(f"{args.input}: no such file or folder")
    recording = Recording(args.input) if is_recording(args.input) else None
    if recording is None and args.check:
        raise CommandError(f"--check compares with recorded masks: {args.input} is a capture, not a .mcap recording")
    if recording is not None and args.script is not None:
        raise CommandError("--script gives a capture's prompts; a recording replays its own")
    if args.report is not None and not args.check:
        raise CommandError("--report needs --check")
    script = load_script(args.script) if args.script is not None else None
    overrides = overrides_from(args)
    if args.node == "existing" and _worker_overrides(overrides):
        raise CommandError("--engine, --checkpoint and worker settings change the replay's private node; "
                           "with --node existing, restart that node's worker with them instead")
    summary = _replay(args, settings, overrides, recording, script)
    print(json.dumps(summary, indent=2))
    check = summary.get("check")
    if check is not None and not check["passed"]:
        failing = ", ".join(check["failing_objects"]) or "none"
        print(f"samsa-stream replay: check failed: objects below mean DICE {args.min_dice}: {failing}; "
              f"results not reproduced: {check['results_missing']}"
              + (f"; report: {args.report / 'report.md'}" if args.report else ""), file=sys.stderr)
        return CHECK_FAILED
    return 0


def _worker_overrides(overrides: dict[str, Any]) -> bool:
    return bool(overrides.get("worker"))


def _replay(args: argparse.Namespace, settings: Any, overrides: dict[str, Any], recording: Any,
            script: Any) -> dict[str, Any]:
    from ..errors import CommandError
    from ..recording.check import Comparison
    from ..recording.replay import (
        NodeLink,
        Pace,
        node_failure,
        plan,
        private_node,
        progress,
        replay_capture,
        replay_recording,
    )

    pace = Pace(0.0 if args.fast else args.speed, step=args.step)
    check = Comparison(args.min_dice) if args.check else None
    on_step = None if args.quiet else progress
    if recording is not None:
        streams = plan(recording).streams
        if not streams:
            raise CommandError(f"{args.input}: holds no recorded stream to replay")
    else:
        streams = [settings.ingest.stream_id]
    run_dir = Path(tempfile.mkdtemp(prefix="samsa-replay-"))
    node = None
    try:
        if args.node == "private":
            node = private_node(overrides, run_dir, args.config)
            settings = node.settings
        link = NodeLink(settings, streams, args.timeout)
        try:
            if not link.ready():
                why = node_failure(node) if node is not None else None
                raise CommandError(why or f"the worker at {settings.endpoints.prompts} does not answer")
            if args.node == "existing":
                for stream in streams:  # its prompts from before must not mix with the recorded ones
                    link.consoles[stream].request("reset")
            if recording is not None:
                tally = replay_recording(recording, link, pace, check, on_step)
            else:
                frames, count = _capture_frames(args.input, settings, script)
                tally = replay_capture(frames, script, count, link, pace)
        finally:
            link.close()
        summary: dict[str, Any] = {"input": str(args.input), "node": args.node, **tally.summary()}
        if recording is not None and recording.unreadable:
            summary["unreadable"] = dict(recording.unreadable)
        if node is not None:
            failure = node_failure(node)
            if failure is not None:
                raise CommandError(failure)
            summary["engine"] = node.settings.worker.engine
        if tally.prompt_outcomes_differ:
            summary["prompt_outcomes_differ_detail"] = tally.prompt_outcomes_differ[:20]
        if tally.timeouts:
            summary["timeouts_detail"] = tally.timeouts[:20]
        if check is not None:
            about = {"recording": str(args.input), "settings": list(getattr(args, "assignments", []) or []),
                     "engine": summary.get("engine"), "replay": tally.summary()}
            summary["check"] = (check.report(args.report, about) if args.report else {**about, **check.summary()})
            summary["check"].pop("replay", None)
            summary["check"].pop("missing", None)
        return summary
    finally:
        if node is not None:
            if args.report is not None:
                args.report.mkdir(parents=True, exist_ok=True)
                for name in ("worker", "publisher"):
                    node.stop(name)
                    shutil.copyfile(node.log_dir / f"{name}.log", args.report / f"{name}.log")
            node.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _capture_frames(path: Path, settings: Any, script: Any) -> tuple[Any, int]:
    """The capture's frames on the stream ``ingest.stream_id``, and how many there are when the script places
    prompts by ``frame_fraction`` (else 0: not counted)."""
    from .segment import count_frames, read_frames

    fractions = script is not None and any(e.frame is None for e in script.entries)
    count = count_frames(path, settings, 10**9) if fractions else 0

    def frames() -> Any:
        for frame in read_frames(path, settings):
            frame.stream_id = settings.ingest.stream_id
            yield frame
    return frames(), count
