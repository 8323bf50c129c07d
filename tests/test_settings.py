"""Settings: defaults < config file < environment < command line; invalid values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from samsa_stream.cli import command_modules, main
from samsa_stream.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_file_is_valid_and_matches_defaults() -> None:
    assert load_settings(ROOT / "config" / "samsa.toml") == load_settings()


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[ingest]\nfps = 5.0\nstream_id = "file"\n[worker.spectral]\nthreshold_rad = 0.2\n')
    s = load_settings(cfg)
    assert (s.ingest.fps, s.ingest.stream_id, s.worker.spectral.threshold_rad) == (5.0, "file", 0.2)
    monkeypatch.setenv("SAMSA_INGEST__FPS", "7")
    monkeypatch.setenv("SAMSA_CONFIG", str(cfg))
    s = load_settings()
    assert s.ingest.fps == 7.0 and s.ingest.stream_id == "file"
    s = load_settings(overrides={"ingest": {"fps": "9"}})
    assert s.ingest.fps == 9.0 and s.worker.spectral.threshold_rad == 0.2


@pytest.mark.parametrize("overrides, field", [
    ({"endpoints": {"frames": "http://x"}}, "endpoints.frames"),
    ({"ingest": {"fps": -1}}, "ingest.fps"),
    ({"ingest": {"stream_id": "bad id!"}}, "ingest.stream_id"),
    ({"sockets": {"frames_hwm": 0}}, "sockets.frames_hwm"),
    ({"ingest": {"phantom": {"wavelength_min_nm": 900, "wavelength_max_nm": 500}}}, "ingest.phantom"),
    ({"worker": {"nonsense": 1}}, "worker.nonsense"),
])
def test_invalid_settings_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(SettingsError, match=field.replace(".", r"\.")):
        load_settings(overrides=overrides)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad)


def test_cli_reports_invalid_settings_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--set", "worker.spectral.threshold_rad=-1"]) == 2
    assert "worker.spectral.threshold_rad" in capsys.readouterr().err
    assert main(["ingest", "--set", "nonsense"]) == 2
    assert "SECTION.FIELD=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("command", command_modules())
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    command = command.replace("_", "-")  # module train_adapter is the command train-adapter
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: samsa-stream {command}")
    assert "--config" in out or command == "keys"  # keys reads no settings


def test_raw_counts_setting(tmp_path: Path) -> None:
    assert load_settings().ingest.raw_counts == "refuse"
    cfg = tmp_path / "node.toml"
    cfg.write_text('[ingest]\nraw_counts = "scale"\n')
    assert load_settings(cfg).ingest.raw_counts == "scale"
    with pytest.raises(SettingsError, match=r"ingest\.raw_counts"):
        load_settings(overrides={"ingest": {"raw_counts": "yes"}})
