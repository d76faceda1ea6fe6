"""``dicom-node ae|destinations|associations`` on the YAML file and through a running node's API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from dicom_node.admin.api import TOKEN_ENV
from dicom_node.cli import main
from dicom_node.config import load_config
from tests.dicom_node.conftest import NodeHarness, free_port, make_study
from tests.peers import require, start_logged

TOKEN = "cli-admin-token"


@pytest.fixture
def live(make_node: Callable[..., NodeHarness], monkeypatch: pytest.MonkeyPatch) -> NodeHarness:
    """A node whose admin API listens on a free loopback port."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    harness = make_node(admin_token=TOKEN)
    harness.node.start_api("127.0.0.1", 0)
    return harness


def _api(harness: NodeHarness) -> list[str]:
    assert harness.node.api is not None
    return ["--api", f"http://127.0.0.1:{harness.node.api.port}", "--token", TOKEN]


def _json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_ae_commands_edit_the_quick_start_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "var")]
    add = ["ae", "add", "US_AI", "--caller", "US_ROOM_1@10.0.0.21:104", "--engine", "liver"]
    assert main([*add, "--modality", "US", "--quiet-seconds", "10", *data]) == 0
    assert "restart" in capsys.readouterr().out
    saved = load_config(tmp_path / "var" / "config.yaml")
    pipeline = saved.pipeline_for("US_AI")
    assert pipeline is not None and pipeline.allowed_callers is not None
    assert (pipeline.allowed_callers[0].host, pipeline.allowed_callers[0].port) == (
        "10.0.0.21",
        104,
    )
    assert pipeline.rules[0].engines == ["liver"] and pipeline.completion.quiet_seconds == 10
    assert saved.pipeline_for("DICOM_NODE") is not None, "the quick-start pipeline is kept"
    assert main(["ae", "update", "US_AI", "--any-caller", "--expected-series", "2", *data]) == 0
    assert "accepts any calling AE" in capsys.readouterr().err
    assert main(["ae", "list", *data]) == 0
    listing = capsys.readouterr()
    assert "--api URL lists what it runs" in listing.err, "offline: the flags are not seen"
    listed = {p["called_ae"]: p for p in json.loads(listing.out)}
    assert listed["US_AI"]["allowed_callers"] is None
    assert listed["US_AI"]["completion"] == {"quiet_seconds": 10.0, "expected_series": 2}
    assert listed["US_AI"]["rules"][0]["engines"] == ["liver"], "unchanged flags are kept"
    assert main(["ae", "remove", "US_AI", *data]) == 0
    assert load_config(tmp_path / "var" / "config.yaml").pipeline_for("US_AI") is None


def test_ae_commands_keep_the_rest_of_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    example = Path(__file__).resolve().parents[2] / "config" / "example.yaml"
    path.write_text(example.read_text())
    config = ["--config", str(path)]
    assert main(["destinations", "add", "pacs", "PACS@10.0.0.9:104", *config]) == 0
    assert main(["ae", "update", "US_AI", "--destination", "pacs", *config]) == 0
    saved = yaml.safe_load(path.read_text())
    assert saved["limits"]["min_free_disk_mb"] == 1024
    assert saved["export"]["backoff_max_seconds"] == 900
    us_ai = next(p for p in saved["pipelines"] if p["called_ae"] == "US_AI")
    assert us_ai["destinations"] == ["pacs"]
    assert [r["name"] for r in us_ai["rules"]][:2] == ["liver", "breast"]
    assert (tmp_path / "node.yaml.bak").exists()


def test_destinations_update_keeps_the_overlay_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.yaml"
    example = Path(__file__).resolve().parents[2] / "config" / "example.yaml"
    path.write_text(example.read_text().replace("data_dir: ./var", f"data_dir: {tmp_path}/var"))
    config = ["--config", str(path)]

    def overlays() -> dict[str, bool]:
        return {d.name: d.overlay_capture for d in load_config(path).destinations}

    assert overlays()["viewer-overlays"]
    assert main(["destinations", "update", "viewer-overlays", "VIEWER@10.0.0.7:104", *config]) == 0
    assert overlays()["viewer-overlays"], "an archive that moved keeps its overlay images"
    assert main(["destinations", "add", "pacs", "PACS@10.0.0.9:104", *config]) == 0
    assert not overlays()["pacs"]
    assert main(["destinations", "update", "viewer-overlays", "VIEWER@10.0.0.7:104",
                 "--no-overlay-capture", *config]) == 0
    assert not overlays()["viewer-overlays"]
    capsys.readouterr()
    # A listing of a node that has never run says so and makes no index.
    assert main(["destinations", "list", *config]) == 2
    assert "no index at" in capsys.readouterr().err
    assert not (tmp_path / "var" / "index.sqlite").exists()


@pytest.mark.parametrize(
    ("title", "message"),
    [
        ("SEVENTEEN_CHARS_X", "longer than 16 characters"),
        ("BACK\\SLASH", "backslash or control character"),
        ("  ", "empty or only spaces"),
    ],
)
def test_bad_ae_title_exits_2_with_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], title: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ae", "add", title, "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ae", "add", "OK_AE", "--caller", f"{title}@10.0.0.1", "--data-dir", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "config.yaml").exists()


def test_refused_changes_exit_2_and_unknown_names_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["ae", "add", "DICOM_NODE", *data]) == 2
    assert "already has a pipeline" in capsys.readouterr().err
    assert main(["ae", "add", "X", "--destination", "nowhere", *data]) == 2
    assert "unknown destination 'nowhere'" in capsys.readouterr().err
    assert main(["ae", "remove", "NOPE", *data]) == 1
    assert "no pipeline 'NOPE'" in capsys.readouterr().err
    assert main(["destinations", "remove", "nowhere", *data]) == 1


def test_ae_add_through_the_api_takes_effect_at_once(
    live: NodeHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not live.associate(called="LIVE_AE").is_established
    assert main(["ae", "add", "LIVE_AE", "--caller", "MODALITY", *_api(live)]) == 0
    assert "applied by the node" in capsys.readouterr().out
    assoc = live.associate(calling="MODALITY", called="LIVE_AE")
    assert assoc.is_established
    assoc.release()
    assert load_config(live.node.config_store.path).pipeline_for("LIVE_AE") is not None
    assert main(["ae", "update", "LIVE_AE", "--caller", "OTHER", *_api(live)]) == 0
    assert not live.associate(calling="MODALITY", called="LIVE_AE").is_established
    assert main(["ae", "remove", "LIVE_AE", *_api(live)]) == 0
    assert live.node.config().pipeline_for("LIVE_AE") is None


def test_api_refusals_reach_the_cli(live: NodeHarness, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ae", "add", "X", "--destination", "nowhere", *_api(live)]) == 2
    assert "unknown destination 'nowhere'" in capsys.readouterr().err
    no_token = _api(live)[:2]
    assert main(["ae", "add", "X", *no_token]) == 1
    assert "bearer token" in capsys.readouterr().err
    assert main(["ae", "list", "--api", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "cannot reach the admin API" in capsys.readouterr().err


def test_destinations_echo_through_api_and_file(
    live: NodeHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["destinations", "add", "self", f"NODE@127.0.0.1:{live.port}", *_api(live)]) == 0
    dead = f"DEAD@127.0.0.1:{free_port()}"
    assert main(["destinations", "add", "dead", dead, *_api(live)]) == 0
    assert main(["destinations", "echo", "self", *_api(live)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["destinations", "echo", "dead", *_api(live)]) == 1
    assert "echo dead failed" in capsys.readouterr().err
    assert main(["destinations", "list", *_api(live)]) == 0
    health = {d["name"]: d["healthy"] for d in _json(capsys)}  # type: ignore[attr-defined]
    assert health == {"self": True, "dead": False}
    offline = ["--data-dir", str(tmp_path / "other")]
    assert main(["destinations", "add", "self", f"NODE@127.0.0.1:{live.port}", *offline]) == 0
    assert main(["destinations", "echo", "self", *offline]) == 0
    assert "echo self: OK" in capsys.readouterr().out
    assert main(["destinations", "list", *offline]) == 0
    assert _json(capsys)[-1]["last_echo_ms"] is not None  # type: ignore[index]


def test_association_listing_filters(live: NodeHarness, capsys: pytest.CaptureFixture[str]) -> None:
    live.store(make_study(1), calling="MODALITY")
    assert not live.associate(called="NOT_HERE").is_established
    data = ["--data-dir", str(live.node.config().data_dir)]
    capsys.readouterr()
    assert main(["associations", "list", "--accepted", "no", *data]) == 0
    assert [a["called_ae"] for a in _json(capsys)] == ["NOT_HERE"]  # type: ignore[attr-defined]
    assert main(["associations", "list", "--called-ae", "NODE", *data]) == 0
    assert [a["instances"] for a in _json(capsys)] == [1]  # type: ignore[attr-defined]
    assert main(["associations", "list", "--since", "2999-01-01T00:00:00", *data]) == 0
    assert _json(capsys) == []


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[int, int]]]:
    """Starts ``dicom-node serve`` subprocesses (quick start) and stops them."""
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(data: Path) -> tuple[int, int]:
        for process, log in processes:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, log.read_text()
        port, api_port = free_port(), free_port()
        log = tmp_path / f"serve-{len(processes)}.log"
        command = [sys.executable, "-m", "dicom_node.cli", "--log-json", "serve"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)]
        command += ["--api-port", str(api_port)]
        env = {**os.environ, TOKEN_ENV: TOKEN}
        process = start_logged(command, log, b"admin_api_started", env=env)
        processes.append((process, log))
        return port, api_port

    yield start
    for process, _ in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def _echoscu(called: str, port: int) -> int:
    return subprocess.run(
        ["echoscu", "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        timeout=60,
        check=False,
    ).returncode


def test_quick_start_node_keeps_ae_titles_added_through_the_api(
    serve: Callable[..., tuple[int, int]], tmp_path: Path
) -> None:
    require("echoscu")
    data = tmp_path / "var"
    port, api_port = serve(data)
    assert _echoscu("ADDED_AE", port) != 0
    api = ["--api", f"http://127.0.0.1:{api_port}", "--token", TOKEN]
    assert main(["ae", "add", "ADDED_AE", *api]) == 0
    assert _echoscu("ADDED_AE", port) == 0
    assert (data / "config.yaml").exists()
    port, _ = serve(data)
    assert _echoscu("ADDED_AE", port) == 0, "the change survives a restart"
    assert _echoscu("DICOM_NODE", port) == 0


def test_health_asks_the_api_or_else_the_dicom_port(
    serve: Callable[..., tuple[int, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "var"
    port, api_port = serve(data)
    where = ["--data-dir", str(data), "--port", str(port)]
    assert main(["health", *where, "--api-port", str(api_port)]) == 0
    assert main(["health", *where, "--api-port", str(api_port), "--ready"]) == 0
    assert capsys.readouterr().out.split() == ["healthy", "ready"]
    assert main(["health", *where, "--api-port", "0"]) == 0, "the DICOM port answers"
    silent = free_port()
    assert main(["health", *where, "--api-port", str(silent)]) == 1
    assert f"http://127.0.0.1:{silent}/healthz does not answer" in capsys.readouterr().err
    assert main(["health", "--data-dir", str(data), "--port", str(silent), "--api-port", "0"]) == 1
    assert f"nothing answers association requests on 127.0.0.1:{silent}" in capsys.readouterr().err
    tls = tmp_path / "tls.yaml"
    tls.write_text(f"port: {port}\napi_port: 0\ndata_dir: {data}\ntls:\n"
                   "  certificate: node.pem\n  private_key: node.key\n")
    assert main(["health", "--config", str(tls)]) == 0, "a TLS port is alive when it accepts"
    assert main(["health", "--config", str(tls), "--port", str(silent)]) == 1


def test_serve_exits_1_when_the_api_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        command = [sys.executable, "-m", "dicom_node.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", "0", "--data-dir", str(tmp_path), "--api-port"]
        command.append(str(busy.getsockname()[1]))
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "admin API cannot listen on 127.0.0.1" in result.stderr
