"""The ``dicom-node`` command as an admin uses it, against DCMTK's echoscu."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit
from structlog.testing import capture_logs

from dicom_node.cli import build_config, main, make_parser, parse_address
from dicom_node.index import IndexQueries
from tests.dicom_node.conftest import NodeHarness, make_study
from tests.peers import free_port, require, run_orthanc, start_logged, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``dicom-node serve`` in a subprocess on a free port."""
    port = free_port()
    data = tmp_path / "var"
    command = [
        sys.executable,
        "-m",
        "dicom_node.cli",
        "--log-json",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data),
        "--ae-title",
        "CLI_NODE",
        "--api-port",
        "0",
    ]
    log = tmp_path / "serve.log"
    process = start_logged(command, log, b"receiver_started")
    yield port, data
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()
    assert b"node_stopped" in log.read_bytes()


def test_serve_answers_echoscu_and_dicom_node_echo(served: tuple[int, Path]) -> None:
    port, _ = served
    require("echoscu")
    echo = subprocess.run(
        ["echoscu", "-aec", "CLI_NODE", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert echo.returncode == 0, echo.stderr
    assert main(["echo", f"CLI_NODE@127.0.0.1:{port}"]) == 0
    assert main(["echo", f"WRONG_AE@127.0.0.1:{port}"]) == 1


def test_send_proposes_each_files_own_transfer_syntax(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dicom-node send`` to Orthanc: the demo studies (JPEG baseline, as scanners send)
    and a deflated file arrive in their own transfer syntax, an uncompressed one too."""
    folder = tmp_path / "send"
    assert main(["demo-study", str(folder / "demo"), "--kinds", "liver", "--images", "1"]) == 0
    plain, deflated = make_study(2)
    plain.save_as(folder / "plain.dcm", enforce_file_format=True)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(folder / "deflated.dcm", enforce_file_format=True)
    files = sorted(p for p in folder.rglob("*.dcm"))
    sent = {str(ds.SOPInstanceUID): str(ds.file_meta.TransferSyntaxUID)
            for ds in (dcmread(p, stop_before_pixels=True) for p in files)}
    assert JPEGBaseline8Bit in sent.values() and DeflatedExplicitVRLittleEndian in sent.values()

    with run_orthanc(tmp_path / "orthanc") as orthanc:
        assert main(["send", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", str(folder)]) == 0
        assert f"sent {len(files)} of {len(files)} file(s)" in capsys.readouterr().out
        stored = {}
        for instance in orthanc.get("/instances"):
            uid = orthanc.get(f"/instances/{instance}/simplified-tags")["SOPInstanceUID"]
            syntax = orthanc.get_bytes(f"/instances/{instance}/metadata/TransferSyntax")
            stored[uid] = syntax.decode()
    assert stored == sent


def test_study_complete_of_unknown_study(served: tuple[int, Path]) -> None:
    _, data = served
    assert main(["study", "complete", "1.2.3.4", "--data-dir", str(data)]) == 1


def test_listing_commands(served: tuple[int, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, data = served
    for what in ("studies", "jobs", "exports", "associations"):
        assert main([what, "list", "--data-dir", str(data)]) == 0
    assert "[" in capsys.readouterr().out


def test_config_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: -5\n")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "port" in capsys.readouterr().err


def test_check_prints_what_would_run_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "node.yaml"
    config.parent.mkdir()
    config.write_text(EXAMPLE.read_text())
    assert main(["serve", "--config", str(config), "--check"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["data_dir"] == str(tmp_path / "etc" / "var")
    assert not (tmp_path / "etc" / "var").exists(), "nothing made, nothing opened"
    assert "US_ROOM_1@10.0.0.21" in summary["pipelines"]["US_AI"]["allowed_callers"]
    assert summary["dicom"] == "0.0.0.0:11112" and "archive" in summary["destinations"]
    assert summary["destination_warnings"] == []
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert capsys.readouterr().out.startswith("dicom-node 0.")


def test_address_parsing() -> None:
    target = parse_address("ORTHANC@10.0.0.1:4242")
    assert (target.ae_title, target.host, target.port) == ("ORTHANC", "10.0.0.1", 4242)
    for bad in ("ORTHANC@host", "@host:1", "TOO_LONG_AE_TITLE_X@h:1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_address(bad)


def test_a_file_without_pipelines_keeps_the_node_closed(tmp_path: Path) -> None:
    # Quick start (no pipelines key): one pipeline on the node's AE title.  A file whose
    # last pipeline an administrator removed stays without one after a restart.
    closed, quick = tmp_path / "closed.yaml", tmp_path / "quick.yaml"
    closed.write_text(f"ae_title: US_AI\ndata_dir: {tmp_path}\npipelines: []\n")
    quick.write_text(f"ae_title: US_AI\ndata_dir: {tmp_path}\n")
    parse = make_parser().parse_args
    assert build_config(parse(["serve", "--config", str(closed)])).pipelines == []
    (pipeline,) = build_config(parse(["serve", "--config", str(quick)])).pipelines
    assert pipeline.called_ae == "US_AI"


def test_quiet_seconds_flag_sets_the_quick_start_pipeline_only(tmp_path: Path) -> None:
    saved = tmp_path / "config.yaml"
    saved.write_text(
        "pipelines:\n"
        "  - {called_ae: DICOM_NODE}\n"
        "  - {called_ae: US_AI, completion: {quiet_seconds: 5}}\n"
    )
    args = make_parser().parse_args(
        ["serve", "--data-dir", str(tmp_path), "--quiet-seconds", "10"]
    )
    quiet = {p.called_ae: p.completion.quiet_seconds for p in build_config(args).pipelines}
    assert quiet == {"DICOM_NODE": 10, "US_AI": 5}


def test_archive_flag_reaches_the_quick_start_pipeline_after_an_offline_edit(
    tmp_path: Path,
) -> None:
    """An offline ``ae add`` saves the quick-start pipeline without the serve flags; the
    next ``serve --archive`` still sends its results to the archive."""
    data = ["--data-dir", str(tmp_path)]
    assert main(["ae", "add", "US_X", "--caller", "PACS", *data]) == 0
    args = make_parser().parse_args(["serve", "--archive", "ORTHANC@127.0.0.1:4242", *data])
    sends = {p.called_ae: p.destinations for p in build_config(args).pipelines}
    assert sends == {"DICOM_NODE": ["archive"], "US_X": []}


def test_log_options_before_or_after_the_sub_command() -> None:
    parse = make_parser().parse_args
    for args in (["--log-json", "serve"], ["serve", "--log-json"]):
        assert parse(args).log_json
    assert not parse(["serve"]).log_json
    assert parse(["--log-level", "debug", "serve"]).log_level == "DEBUG"
    assert parse(["serve", "--log-level", "warning"]).log_level == "WARNING"


def test_exports_retry_by_destination_and_by_id(
    make_node: Callable[..., NodeHarness], capsys: pytest.CaptureFixture[str]
) -> None:
    dead = {"name": "dead", "ae_title": "DEAD", "host": "127.0.0.1", "port": free_port()}
    harness = make_node(destinations=[dead], export={"max_attempts": 1},
                        pipeline={"called_ae": "NODE", "destinations": ["dead"]})
    harness.store(make_study(1))
    harness.settle()
    harness.node.exporter.run_destination("dead")
    data = str(harness.node.config().data_dir)
    assert main(["exports", "retry", "--destination", "dead", "--data-dir", data]) == 0
    assert "1 export(s) to dead queued again, due now" in capsys.readouterr().out
    (export,) = IndexQueries(harness.node.index).exports()
    assert export["state"] == "pending"
    assert main(["exports", "retry", str(export["id"]), "--data-dir", data]) == 0
    assert "queued again, due now" in capsys.readouterr().out
    assert main(["exports", "discard", str(export["id"]), "--data-dir", data]) == 1
    assert main(["exports", "retry", "999", "--data-dir", data]) == 1
    assert main(["exports", "retry", "--data-dir", data]) == 2


def test_listing_without_an_index_says_so_and_makes_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = tmp_path / "not-a-node"
    assert main(["exports", "list", "--data-dir", str(nowhere)]) == 2
    assert "no index at" in capsys.readouterr().err
    assert not (nowhere / "index.sqlite").exists()
    with pytest.raises(SystemExit):
        main(["jobs", "list", "--state", "bogus", "--data-dir", str(nowhere)])
    with pytest.raises(SystemExit):
        main(["jobs", "list", "--calling-ae", "X", "--data-dir", str(nowhere)])


def test_echo_calls_as_the_configured_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicom_node.cli as cli

    calls: list[str] = []
    monkeypatch.setattr(cli, "c_echo", lambda calling, target: calls.append(calling) or 1.0)
    config = tmp_path / "node.yaml"
    config.write_text("ae_title: US_AI_NODE\n")
    assert main(["echo", "PACS@127.0.0.1:104", "--config", str(config)]) == 0
    assert main(["echo", "PACS@127.0.0.1:104", "--calling-ae", "OTHER"]) == 0
    assert calls == ["US_AI_NODE", "OTHER"]


def test_a_dicom_port_in_use_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--host", "127.0.0.1", "--port", str(port),
                     "--data-dir", str(tmp_path), "--api-port", "0"])
    assert code == 1
    assert f"DICOM port 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err


def test_a_second_node_on_the_same_data_folder_is_refused(
    served: tuple[int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, data = served
    arriving = data / "spool" / "tmp" / "arriving.part"  # as if a C-STORE were being received
    arriving.write_bytes(b"half an instance")
    code = main(["serve", "--host", "127.0.0.1", "--port", str(free_port()),
                 "--data-dir", str(data), "--api-port", "0"])
    assert code == 1
    assert "is in use by another dicom-node process (pid " in capsys.readouterr().err
    assert arriving.exists(), "the refused node did not clean the running one's spool"
    log = data.parent / "serve.log"
    wait_until(lambda: b"node_started" in log.read_bytes(), 30, "the start-up summary")
    (started,) = [json.loads(line) for line in log.read_bytes().splitlines()
                  if b"node_started" in line]
    assert started["data_dir"] == str(data) and started["pipelines"] == {"CLI_NODE": []}
    assert b"data_dir_open_to_other_users" not in log.read_bytes(), "it made the folder 0700"


def test_a_data_folder_open_to_other_users_is_reported(
    make_node: Callable[..., NodeHarness], tmp_path: Path
) -> None:
    (tmp_path / "var").mkdir(mode=0o755)
    (tmp_path / "var").chmod(0o755)
    with capture_logs() as logs:
        make_node()
    (warning,) = [e for e in logs if e["event"] == "data_dir_open_to_other_users"]
    assert warning["mode"] == "0o755"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("data_dir: {tmp}/a-file/var", "data_dir {tmp}/a-file/var: cannot use it: Not a directory"),
        ("tls: {{certificate: {tmp}/none.pem, private_key: {tmp}/none.key}}",
         "tls.certificate {tmp}/none.pem, tls.private_key {tmp}/none.key: cannot load"),
        ("database_url: postgresql+pg8000://node:s3cret@127.0.0.1/node",
         "database_url postgresql+pg8000://node:***@127.0.0.1/node: its database driver"),
    ],
)
def test_start_up_problems_name_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, expected: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    config = tmp_path / "node.yaml"
    data_dir = "" if setting.startswith("data_dir") else f"data_dir: {tmp_path / 'var'}\n"
    config.write_text(data_dir + setting.format(tmp=tmp_path) + "\n")
    code = main(["serve", "--config", str(config), "--host", "127.0.0.1", "--port", "0",
                 "--api-port", "0"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected.format(tmp=tmp_path) in err and "Traceback" not in err and "s3cret" not in err


def test_index_actions_of_the_cli_leave_an_audit_event(
    make_node: Callable[..., NodeHarness], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    harness = make_node()
    harness.store(make_study(1))
    harness.settle()
    (job,) = IndexQueries(harness.node.index).jobs()
    data = str(harness.node.config().data_dir)
    capsys.readouterr()
    assert main(["--log-json", "jobs", "rerun", str(job["id"]), "--data-dir", data]) == 0
    logs = [json.loads(line) for line in capsys.readouterr().err.splitlines()
            if line.startswith("{")]
    (event,) = [e for e in logs if e["event"] == "job_requeued"]
    assert event["via"] == "cli" and event["job_id"] == job["id"] and event["user"]
