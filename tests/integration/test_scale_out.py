"""Two workers behind one publisher, each serving its own camera's stream: frames reach only their
worker, a stream's prompts go to the worker that serves it, and every display sees both streams."""

from __future__ import annotations

from samsa_stream.display.console import PromptConsole
from samsa_stream.display.subscriber import Subscriber
from samsa_stream.ingest.sources.phantom import PhantomCamera
from samsa_stream.node import LocalNode, wait_until
from samsa_stream.settings import load_settings
from tests.conftest import iou
from tests.integration.conftest import FAST


def test_two_workers_two_streams_one_publisher(tmp_path) -> None:
    with LocalNode(FAST, run_dir=tmp_path) as node:
        base = node.settings.endpoints
        folder = base.frames.rpartition("/")[0]
        lanes = {sid: {"frames": f"{folder}/frames-{sid}", "prompts": f"{folder}/prompts-{sid}"}
                 for sid in ("cam0", "cam1")}
        routes = ",".join(f"{sid}={lane['prompts']}" for sid, lane in lanes.items())
        node.start("publisher")
        for sid, lane in lanes.items():
            node.start("worker", "--set", f"endpoints.frames={lane['frames']}", "--set",
                       f"endpoints.prompts={lane['prompts']}", "--set", f"worker.streams={sid}", key=f"worker-{sid}")
            node.start("ingest", "--set", f"endpoints.frames={lane['frames']}", "--set", f"ingest.stream_id={sid}",
                       key=f"ingest-{sid}")
        # A console of this node: each stream's prompts go to the worker that serves it.
        settings = load_settings(overrides={**node.overrides,
                                            "endpoints": {**node.overrides["endpoints"], "prompts_by_stream": routes}})
        consoles = {sid: PromptConsole(settings, sid) for sid in lanes}
        display = Subscriber(settings, ["cam0", "cam1"], kinds=("mask",))
        cam = PhantomCamera(settings.ingest.phantom)
        try:
            for sid, console in consoles.items():
                assert wait_until(console.answers, timeout=60, interval=0.2), node.log_text(f"worker-{sid}")[-2000:]

            def newest(sid: str) -> int | None:
                return console_state(consoles[sid]).get("streams", {}).get(sid, {}).get("last_frame_id")

            for k, sid in enumerate(lanes):  # object k of the phantom on camera k, clicked on its own worker
                assert wait_until(lambda s=sid: newest(s) is not None, timeout=30), f"no frame of {sid}"
                frame_id = newest(sid)
                assert consoles[sid].click(k + 1, *cam.centre(k, frame_id), frame_id=frame_id).ok
            # Each worker holds its own stream only, and refuses the other's prompts, naming the rule.
            for sid, other in (("cam0", "cam1"), ("cam1", "cam0")):
                streams = console_state(consoles[sid])["streams"]
                assert set(streams) == {sid}, streams
                wrong = consoles[sid].request("click", stream_id=other, object_id=9, x=5.0, y=5.0)
                assert not wrong.ok and "served by another worker" in wrong.error
            # One display sees both streams' masks, each with its own object, following the phantom.
            seen: dict[str, float] = {}

            def both_tracked() -> bool:
                update = display.receive(200)
                if update is not None and update.masks is not None and update.masks.objects:
                    (obj,) = update.masks.objects
                    k = obj.object_id - 1
                    seen[update.stream_id] = iou(obj.mask, cam.labels(update.frame_id) == k + 1)
                return set(seen) == {"cam0", "cam1"}

            assert wait_until(both_tracked, timeout=60, interval=0.0), seen
            assert min(seen.values()) >= 0.8, seen
        finally:
            for console in consoles.values():
                console.close()
            display.close()


def console_state(console: PromptConsole) -> dict:
    return console.request("status").state
