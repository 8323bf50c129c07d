"""``samsa-stream doctor``: check a machine before theatre (packages, GPU, checkpoint, endpoints,
shared memory, state folder, key files, clock) and print a pass/warn/fail table.

Exit 1 when something would stop the node (a fail); warnings alone exit 0. Nothing is started and
no weights go onto a GPU: the checkpoint is read on the CPU only to learn its variant.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ..cli import common_options, setting_flag, settings_from
from ..settings import Settings

Status = Literal["pass", "warn", "fail"]
MIN_PYTHON = (3, 11)
MIN_GPU_FREE_BYTES = 2 * 2**30  # a SAM2 model, its activations and the cubes of a few streams
# A camera's cube size is known only once it reads; this is what /dev/shm is sized against for real sources.
NOMINAL_CUBE = (480, 640, 100)  # height, width, bands (a TIVITA-size cube)
CLOCK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this machine before theatre (pass / warn / fail)",
                       description="Check what the node needs on this machine: Python and packages, CUDA and free "
                                   "GPU memory, the configured SAM2 checkpoint (its variant, read on the CPU), each "
                                   "endpoint (free to bind, or in use; ipc folders), /dev/shm against the frame ring, "
                                   "the worker's state folder, CURVE key file permissions and, for links to other "
                                   "hosts, clock synchronisation. Run it as the service user with the service's "
                                   "config. Exits 1 when a check fails (the node would not run), 0 otherwise.")
    common_options(p)
    setting_flag(p, "--checkpoint", "worker.checkpoint", "check this SAM2 checkpoint instead of the configured one")
    setting_flag(p, "--state-file", "worker.state_file", "the worker's --state-file (as in its unit)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    checks = run_checks(settings_from(args))
    print(json.dumps(as_json(checks), indent=2) if args.json else format_table(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order they are printed."""
    return [check_python(), *check_packages(settings), *check_cuda(settings), *check_checkpoint(settings),
            *check_endpoints(settings), *check_shared_memory(settings), check_state_file(settings),
            *check_keys(settings), *check_clock(settings)]


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status.upper():4}  {c.name:{width}}  {c.detail}" for c in checks]
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "warn", "fail")}
    verdict = "the node would not run" if counts["fail"] else "ready" + (" (see warnings)" if counts["warn"] else "")
    return "\n".join([*lines, f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail: {verdict}"])


def as_json(checks: list[Check]) -> dict[str, object]:
    return {"ok": not any(c.status == "fail" for c in checks), "checks": [asdict(c) for c in checks]}


# -- Python and packages ---------------------------------------------------------------------------

def check_python() -> Check:
    version = platform.python_version()
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_PYTHON:
        return Check("python", "fail", f"{version}: samsa-stream needs {'.'.join(map(str, MIN_PYTHON))} or newer")
    return Check("python", "pass", f"{version} ({platform.python_implementation()})")


def _needs_sam2(settings: Settings) -> bool:
    from ..worker.engines import needs_sam2

    w = settings.worker
    return needs_sam2(w.engine) and (w.checkpoint is not None or w.random_weights)


def check_packages(settings: Settings) -> list[Check]:
    """Each package, failing when a process of the configured node cannot start without it."""
    sam2_needed = _needs_sam2(settings)
    packages: list[tuple[str, str, bool]] = [  # module, what needs it, whether the node stops without it
        ("zmq", "every process", True),
        ("torch", "the worker", True),
        ("cv2", "the publisher's overlays", True),
        ("sam2", f"engine {settings.worker.engine}" if sam2_needed else "the SAM2 engines (not configured)",
         sam2_needed),
        ("mcap", "samsa-stream record", False),
        ("aiohttp", "samsa-stream web", False),
        ("pyigtl", "samsa-stream igtl", False),
        ("prometheus_client", "metrics.listen", settings.metrics.listen is not None),
        ("sdnotify", "systemd readiness and watchdog", False),
    ]
    checks = []
    for module, used_by, required in packages:
        try:
            imported = importlib.import_module(module)
        except Exception as exc:  # a broken install raises more than ImportError (e.g. a missing CUDA library)
            checks.append(Check(f"package {module}", "fail" if required else "warn",
                                f"cannot import ({type(exc).__name__}: {exc}); needed by {used_by}"))
            continue
        version = getattr(imported, "__version__", None) or _distribution_version(module)
        checks.append(Check(f"package {module}", "pass", str(version)))
    return checks


def _distribution_version(module: str) -> str:
    try:
        return importlib.metadata.version(module.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


# -- GPU and checkpoint ----------------------------------------------------------------------------

def check_cuda(settings: Settings) -> list[Check]:
    try:
        import torch
    except Exception:  # reported by check_packages
        return []
    device, sam2 = settings.worker.device, _needs_sam2(settings)
    if not torch.cuda.is_available():
        if device == "cuda":
            return [Check("cuda", "fail", "worker.device = 'cuda' but no CUDA device is available")]
        configured = f", and engine {settings.worker.engine} is configured" if sam2 else ""
        return [Check("cuda", "warn", "no CUDA device: the spectral engine works; SAM2 engines would run on the CPU "
                      f"(far from real time){configured}")]
    checks = []
    for index in range(torch.cuda.device_count()):
        name = torch.cuda.get_device_name(index)
        free, total = torch.cuda.mem_get_info(index)
        status: Status = "warn" if sam2 and free < MIN_GPU_FREE_BYTES else "pass"
        checks.append(Check(f"cuda:{index}", status, f"{name}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
                            + (" (a SAM2 engine wants about 2 GiB)" if status == "warn" else "")))
    return checks


def check_checkpoint(settings: Settings) -> list[Check]:
    """The configured checkpoint: there, readable, and an official SAM2 variant matching its name and config."""
    w = settings.worker
    if w.checkpoint is None:
        if _needs_sam2(settings) or w.engine == "spectral":
            detail = "random weights (tests only)" if w.random_weights else "none needed (engine spectral)"
            return [Check("checkpoint", "warn" if w.random_weights else "pass", detail)]
        return [Check("checkpoint", "warn", f"none configured: engine {w.engine} falls back to the spectral engine "
                      "(worker.checkpoint)")]
    path = Path(w.checkpoint)
    if not path.is_file():
        return [Check("checkpoint", "fail", f"{path} does not exist")]
    if not os.access(path, os.R_OK):
        return [Check("checkpoint", "fail", f"{path} is not readable by this user (uid {os.getuid()})")]
    try:
        from ..worker.engines.base import EngineError
        from ..worker.engines.sam2_model import read_checkpoint, variant_from_name, variant_from_state_dict
    except Exception as exc:  # torch missing: reported by check_packages
        return [Check("checkpoint", "fail", f"{path}: cannot be read without torch ({exc})")]
    try:
        found = variant_from_state_dict(read_checkpoint(path), f"checkpoint {path}")  # on the CPU
    except EngineError as exc:
        return [Check("checkpoint", "fail", str(exc))]
    for what, named in (("named", variant_from_name(path.name)),
                        ("configured as", variant_from_name(w.sam2_config or ""))):
        if named is not None and named != found:
            return [Check("checkpoint", "fail",
                          f"{path} is {what} {named.name} but its tensors are {found.describe()}")]
    checks = [Check("checkpoint", "pass", f"{path}: {found.describe()}, {path.stat().st_size / 2**20:.0f} MiB")]
    if w.adapter is not None and not Path(w.adapter).is_file():
        checks.append(Check("adapter", "fail" if w.engine == "decoder" else "warn", f"{w.adapter} does not exist"))
    return checks


# -- endpoints -------------------------------------------------------------------------------------

def _tcp_host_port(endpoint: str) -> tuple[str, int] | None:
    rest = endpoint[len("tcp://"):]
    host, _, port = rest.rpartition(":")
    host = host.rpartition(";")[2].strip("[]")  # 'tcp://source;host:port': the host is what counts
    if not port.isdigit():
        return None
    return ("0.0.0.0" if host == "*" else host), int(port)


def probe_tcp(host: str, port: int) -> Literal["free", "in use", "remote"]:
    """Whether this host could bind ``host:port`` now ("free"), something holds it ("in use"), or the
    address belongs to another host ("remote": this host connects there). OSError for a host that
    does not resolve."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            if exc.errno == errno.EADDRNOTAVAIL:
                return "remote"
            raise
    return "free"


def remote_endpoints(settings: Settings) -> list[str]:
    """The tcp endpoints whose address belongs to another host."""
    remote = []
    for name in ("frames", "prompts", "results", "broadcast"):
        endpoint = getattr(settings.endpoints, name)
        parsed = _tcp_host_port(endpoint) if endpoint.startswith("tcp://") else None
        if parsed is not None:
            try:
                if probe_tcp(*parsed) == "remote":
                    remote.append(endpoint)
            except OSError:
                continue
    return remote


def check_endpoints(settings: Settings) -> list[Check]:
    checks = []
    for name in ("frames", "prompts", "results", "broadcast"):
        endpoint = getattr(settings.endpoints, name)
        checks.append(_check_endpoint(f"endpoint {name}", endpoint))
    listen = [("web", f"{settings.web.host}:{settings.web.port}"),
              ("igtl", f"{'127.0.0.1' if settings.igtl.local_only else '0.0.0.0'}:{settings.igtl.port}")]
    if settings.metrics.listen is not None:
        listen.append(("metrics", settings.metrics.listen))
    for name, address in listen:
        checks.append(_check_endpoint(f"listen {name}", f"tcp://{address}"))
    return checks


def _check_endpoint(name: str, endpoint: str) -> Check:
    if endpoint.startswith("inproc://"):
        return Check(name, "pass", f"{endpoint} (in-process)")
    if endpoint.startswith("ipc://"):
        return _check_ipc(name, endpoint)
    parsed = _tcp_host_port(endpoint)
    if parsed is None:
        return Check(name, "fail", f"{endpoint}: no port number")
    try:
        state = probe_tcp(*parsed)
    except OSError as exc:
        return Check(name, "warn", f"{endpoint}: cannot check this address here ({exc})")
    if state == "in use":
        return Check(name, "warn", f"{endpoint}: in use (a node already running here holds it, else another "
                     "program: the process that binds it would fail)")
    if state == "remote":
        return Check(name, "pass", f"{endpoint}: another host's address (this host connects there)")
    return Check(name, "pass", f"{endpoint}: free to bind")


def _check_ipc(name: str, endpoint: str) -> Check:
    from ..errors import TransportError
    from ..transport.sockets import check_ipc_folder

    if endpoint.startswith("ipc://@"):
        return Check(name, "pass", f"{endpoint} (abstract socket)")
    path = Path(endpoint[len("ipc://"):])
    try:
        check_ipc_folder(endpoint)
    except TransportError as exc:
        return Check(name, "fail", str(exc))
    if not path.parent.is_dir():
        return Check(name, "warn", f"{endpoint}: folder {path.parent} does not exist yet (the binding process "
                     "makes it 0700; under systemd the tmpfiles rule makes it 0750 for group samsa)")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return Check(name, "fail", f"{endpoint}: folder {path.parent} is not writable by this user "
                     f"(uid {os.getuid()}): the process that binds there cannot make its socket")
    if path.exists() and stat.S_ISSOCK(path.lstat().st_mode):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(str(path)) == 0:
                return Check(name, "warn", f"{endpoint}: in use (a running node is listening there)")
        return Check(name, "pass", f"{endpoint}: a stale socket file, replaced when bound")
    return Check(name, "pass", f"{endpoint}: folder writable")


# -- shared memory, state, keys, clock -------------------------------------------------------------

def check_shared_memory(settings: Settings) -> list[Check]:
    """/dev/shm against one camera's ring of ``sockets.shm_slots`` cubes (when frames go through it)."""
    from ..errors import TransportError
    from ..transport.link import uses_shared_memory
    from ..transport.shm import SHM_DIR, segment_bytes

    try:
        if not uses_shared_memory(settings.sockets.shared_memory, settings.endpoints.frames):
            return [Check("shared memory", "pass", f"not used (frames over {settings.endpoints.frames})")]
    except TransportError as exc:
        return [Check("shared memory", "fail", str(exc))]
    ingest = settings.ingest
    if ingest.source in ("phantom", "plugin:phantom"):
        k = ingest.spatial_binning
        height, width, bands = ingest.phantom.height // k, ingest.phantom.width // k, ingest.phantom.bands
        basis = "the phantom's"
    else:
        height, width, bands = NOMINAL_CUBE
        basis = "a nominal"
    itemsize = 2 if ingest.dtype == "float16" else 4
    ring = segment_bytes(settings.sockets.shm_slots, height * width * bands * itemsize)
    try:
        fs = os.statvfs(SHM_DIR)
    except OSError as exc:
        return [Check("shared memory", "fail", f"{SHM_DIR} cannot be read ({exc})")]
    free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
    detail = (f"{SHM_DIR} {free / 2**20:.0f} of {total / 2**20:.0f} MiB free; one camera's ring "
              f"{ring / 2**20:.0f} MiB ({settings.sockets.shm_slots} slots of {basis} {bands}-band "
              f"{height} x {width} {ingest.dtype} cube)")
    if free < ring:
        return [Check("shared memory", "fail", detail + ": too small (enlarge /dev/shm, or fewer sockets.shm_slots)")]
    if free < 2 * ring:
        return [Check("shared memory", "warn", detail + ": no room for a second ring (a restarted camera's or "
                      "another camera's)")]
    return [Check("shared memory", "pass", detail)]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_state_file(settings: Settings) -> Check:
    state = settings.worker.state_file
    if state is None:
        return Check("state file", "warn", "worker.state_file not set: prompts are lost when the worker restarts "
                     "(the unit passes --state-file)")
    folder = Path(state).parent
    existing = _nearest_existing(folder)
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check("state file", "fail", f"{existing} is not writable by this user (uid {os.getuid()}): "
                     f"{state} cannot be saved")
    if existing != folder:
        return Check("state file", "warn", f"{folder} does not exist yet (the worker makes it)")
    return Check("state file", "pass", f"{folder} writable")


def check_keys(settings: Settings) -> list[Check]:
    """CURVE key files: there, loadable, and secret keys readable by their owner alone."""
    sec = settings.security
    if not sec.curve:
        return [Check("curve keys", "pass", "security.curve off (links stay on this host or are unencrypted)")]
    import zmq.auth

    checks = []
    for field in ("server_secret_key", "client_secret_key", "server_public_key"):
        path = getattr(sec, field)
        if path is None:
            continue
        name = f"key {field}"
        try:
            mode = stat.S_IMODE(Path(path).stat().st_mode)
            _, secret = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            checks.append(Check(name, "fail", f"{path} cannot be read as a zmq certificate: {exc}"))
            continue
        if field.endswith("secret_key") and secret is None:
            checks.append(Check(name, "fail", f"{path} holds no secret key (the .key_secret file is needed)"))
        elif field.endswith("secret_key") and mode & 0o077:
            checks.append(Check(name, "fail", f"{path} has mode {mode:04o}: group or others can read the secret "
                                "key (chmod 0600)"))
        else:
            checks.append(Check(name, "pass", f"{path} (mode {mode:04o})"))
    allowed = sec.authorized_clients_dir
    if sec.server_secret_key is not None:
        if allowed is None:
            checks.append(Check("authorized clients", "fail", "security.authorized_clients_dir is not set"))
        elif str(allowed) == "*":
            checks.append(Check("authorized clients", "warn", "'*': any client key is accepted (loopback only)"))
        elif not Path(allowed).is_dir():
            checks.append(Check("authorized clients", "fail", f"{allowed} is not a folder"))
        else:
            count = sum(1 for p in Path(allowed).iterdir() if p.suffix == ".key")
            checks.append(Check("authorized clients", "pass" if count else "warn", f"{allowed}: {count} public key(s)"))
    return checks


def check_clock(settings: Settings) -> list[Check]:
    """For links to other hosts: whether this clock is synchronised (latencies compare hosts' timestamps)."""
    remote = remote_endpoints(settings)
    if not remote:
        return [Check("clock", "pass", "single host: no clock synchronisation needed")]
    where = f"links to other hosts ({', '.join(remote)})"
    if shutil.which("timedatectl"):
        out = _command(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        if out in ("yes", "no"):
            return [Check("clock", "pass" if out == "yes" else "warn",
                          f"{where}: timedatectl NTPSynchronized={out}")]
    if shutil.which("chronyc"):
        out = _command(["chronyc", "-n", "tracking"])
        if out:
            leap = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Leap")), "?")
            return [Check("clock", "pass" if leap == "Normal" else "warn", f"{where}: chrony leap status {leap}")]
    return [Check("clock", "warn", f"{where}: synchronisation status unknown (no timedatectl or chronyc answer); "
                  "keep every host on NTP or PTP, or cross-host latencies are off by the clocks' difference")]


def _command(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CLOCK_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
