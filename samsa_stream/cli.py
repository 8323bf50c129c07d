"""``samsa-stream`` command line: one sub-command per process, plus tools.

Every sub-command reads the settings once (config file < SAMSA_ environment < flags) and
passes them down. ``--set SECTION.FIELD=VALUE`` reaches any setting without a flag.
The project's own errors (``SamsaError``) end a command with one line on stderr and exit 1
(2 for invalid settings); any other exception is a programming error and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__, commands, threads
from .errors import SamsaError
from .settings import Settings, SettingsError, deep_merge, load_settings, parse_assignment

# The pipeline's processes first, then every other module in samsa_stream/commands (tools),
# in name order. Each module defines register(subparsers).
PIPELINE_COMMANDS = ("ingest", "worker", "publisher", "view", "demo")


def command_modules() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    return [c for c in PIPELINE_COMMANDS if c in found] + sorted(found - set(PIPELINE_COMMANDS))


class SettingFlag(argparse.Action):
    """A flag that sets one setting, e.g. ``--fps`` -> ``ingest.fps``; collected into the overrides."""

    def __init__(self, *args: Any, setting: str, **kwargs: Any) -> None:
        self.setting = setting
        super().__init__(*args, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        value = self.const if self.nargs == 0 else values
        overrides = getattr(namespace, "_overrides", None) or {}
        _set_path(overrides, self.setting, value)
        namespace._overrides = overrides


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def setting_flag(parser: argparse.ArgumentParser, flag: str, setting: str, help: str, switch: bool = False,
                 **kwargs: Any) -> None:
    """Add ``flag`` that overrides ``setting`` (dotted path); ``switch`` makes it a boolean on-flag."""
    if switch:
        parser.add_argument(flag, action=SettingFlag, setting=setting, nargs=0, const=True, help=help)
    else:
        parser.add_argument(flag, action=SettingFlag, setting=setting, help=help, **kwargs)


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path,
                        help="TOML settings file (default: $SAMSA_CONFIG, else built-in defaults)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override any setting, e.g. --set worker.spectral.threshold_rad=0.12 (repeatable)")
    parser.add_argument("--stats-file", type=Path,
                        help="write this process's counters and latencies here (JSON) on exit")
    setting_flag(parser, "--log-level", "log.level", "DEBUG, INFO, WARNING or ERROR")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The setting overrides of the command line: every ``--set`` in order (a later one wins), then the
    flags that set a setting (``--fps`` and the like), which win over ``--set``."""
    overrides: dict[str, Any] = {}
    for text in getattr(args, "assignments", None) or []:
        overrides = deep_merge(overrides, parse_assignment(text))
    return deep_merge(overrides, getattr(args, "_overrides", None) or {})


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings for a command: config file < SAMSA_ environment < ``overrides_from(args)``."""
    return load_settings(getattr(args, "config", None), overrides_from(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samsa-stream",
        description="Real-time hyperspectral segmentation node: ingest -> worker -> publisher -> displays over ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"samsa-stream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        module = importlib.import_module(f".commands.{name}", __package__)
        module.register(sub)
    return parser


def _size_tool_threads(args: argparse.Namespace) -> None:
    """Tools that read the settings (segment, eval, bench, ...) compute with ``threads.tools`` threads, set
    before torch loads; the node's processes size theirs by role when they start (commands/_process.py)."""
    from .commands._process import ROLES

    if args.command not in ROLES and hasattr(args, "assignments"):  # common_options: the command has settings
        threads.configure(threads.threads_for(settings_from(args).threads, "tools"))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for commands that record how they ran
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        _size_tool_threads(args)
        return handler(args)
    except SettingsError as exc:
        print(f"samsa-stream {args.command}: {exc}", file=sys.stderr)
        return 2
    except SamsaError as exc:
        print(f"samsa-stream {args.command}: error: {exc}", file=sys.stderr)
        return 1
