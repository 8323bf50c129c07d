"""The command line: the project's errors end in one line and an exit code, other errors keep their traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from samsa_stream.cli import build_parser, main, overrides_from, settings_from
from samsa_stream.commands import keys
from samsa_stream.errors import CommandError, TransportError
from samsa_stream.ingest.capture import SourceError
from samsa_stream.settings import SettingsError


def _handler_raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setattr(keys, "_run", handler)  # registered when main() builds its parser


@pytest.mark.parametrize("exc, code", [
    (CommandError("the worker does not answer"), 1),
    (SourceError("x.npy: not a readable .npy cube"), 1),
    (TransportError("tcp://*:1: address in use"), 1),
    (SettingsError("invalid settings: worker.engine"), 2),
])
def test_project_errors_are_one_line_and_an_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], exc: Exception,
                                                       code: int) -> None:
    _handler_raising(monkeypatch, exc)
    assert main(["keys", "somewhere"]) == code
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("samsa-stream keys: ") and str(exc) in err
    assert "Traceback" not in err


@pytest.mark.parametrize("exc", [KeyError("bug"), ValueError("bug"), RuntimeError("bug"), OSError(5, "bug")])
def test_other_errors_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    _handler_raising(monkeypatch, exc)
    with pytest.raises(type(exc)) as raised:
        main(["keys", "somewhere"])
    assert raised.value is exc


def test_a_programming_error_prints_its_traceback_from_the_command_line(tmp_path: Path) -> None:
    script = ("import sys\nfrom samsa_stream import cli\nfrom samsa_stream.commands import keys\n"
              "def broken(args):\n    return {}['missing']\n"
              "keys._run = broken\nsys.exit(cli.main(['keys', sys.argv[1]]))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "KeyError: 'missing'" in done.stderr


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_repeated_set_last_wins_and_flags_win_over_set() -> None:
    args = _args("ingest", "--set", "ingest.fps=5", "--set", "ingest.frames=3", "--set", "ingest.fps=7")
    assert overrides_from(args) == {"ingest": {"fps": "7", "frames": "3"}}
    assert settings_from(args).ingest.fps == 7.0
    args = _args("ingest", "--fps", "9", "--set", "ingest.fps=5", "--set", "ingest.source=phantom")
    assert overrides_from(args) == {"ingest": {"fps": "9", "source": "phantom"}}
    assert settings_from(args).ingest.fps == 9.0
    assert overrides_from(_args("ingest")) == {}


def test_an_unusable_output_path_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["keys", str(blocker / "keys")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"samsa-stream keys: error: {blocker / 'keys'}: cannot write the key pair")
    assert err.count("\n") == 1
    assert main(["worker", "--stats-file", str(blocker / "stats.json")]) == 1
    assert f"--stats-file {blocker / 'stats.json'}: folder {blocker} does not exist" in capsys.readouterr().err


def test_an_unreadable_config_file_is_a_settings_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_bytes(b"\xff\xfe not text")
    assert main(["ingest", "--config", str(config)]) == 2
    assert f"config file {config} cannot be read" in capsys.readouterr().err


def test_keys_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", str(tmp_path), "--name", "node"]) == 0
    assert (tmp_path / "node.key").is_file() and (tmp_path / "node.key_secret").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert main(["keys", str(tmp_path), "--name", "node"]) == 1
    assert "node.key_secret exists already" in capsys.readouterr().err


def test_tools_compute_with_the_tools_thread_setting_and_processes_keep_theirs(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from samsa_stream import cli, threads

    sized: list[int] = []
    monkeypatch.setattr(threads, "configure", sized.append)
    code = cli.main(["segment", str(tmp_path / "missing.npy"), "--click", "1,1", "--out", str(tmp_path / "o.npz"),
                     "--set", "threads.tools=3"])
    assert code == 1 and sized == [3]  # sized before the command ran (and failed on the missing capture)
    sized.clear()
    monkeypatch.setattr(cli, "settings_from", lambda args: (_ for _ in ()).throw(AssertionError("not read here")))
    parser_args = cli.build_parser().parse_args(["worker"])
    cli._size_tool_threads(parser_args)  # a node process: sized by its role when it starts, not here
    assert sized == []
