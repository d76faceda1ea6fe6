"""Configuration loading and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dicom_node.config import (
    RETURN_TO_SENDER,
    Caller,
    ConfigError,
    Destination,
    NodeConfig,
    Pipeline,
    TLSConfig,
    load_config,
    validate_ae_title,
)
from dicom_node.network import same_address

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.pipelines
    for pipeline in config.pipelines:
        assert pipeline.allowed_callers, "the example config whitelists callers"


def test_pipeline_warnings_name_what_an_administrator_must_fix() -> None:
    """``serve`` logs them and ``ae add|update`` prints them; the example has none."""
    assert all(not p.warnings() for p in load_config(EXAMPLE).pipelines)
    assert Pipeline(called_ae="OPEN").warnings() == [
        "OPEN accepts any calling AE", "OPEN has no destination: its results are not sent"]
    portless = Pipeline(called_ae="BACK", allowed_callers=[Caller(ae_title="US1")],
                        destinations=[RETURN_TO_SENDER])
    assert portless.warnings() == ["BACK returns results to the sender, but no allowed caller "
                                   "has a port: none can be returned"]
    reachable = portless.model_copy(
        update={"allowed_callers": [Caller(ae_title="US1"), Caller(ae_title="US2", port=104)]})
    assert reachable.warnings() == []


def test_a_destination_sent_to_over_tls_without_a_ca_is_warned_of() -> None:
    plain = Destination(name="pacs", ae_title="PACS", host="10.0.0.5", port=104)
    unverified = plain.model_copy(update={"tls": TLSConfig()})
    verified = plain.model_copy(update={"tls": TLSConfig(ca_certificates=Path("ca.pem"))})
    assert plain.warnings() == [] and verified.warnings() == []
    assert unverified.warnings() == [
        "pacs is sent to over TLS without ca_certificates: any certificate is accepted, so an "
        "impostor could receive the results"]


def test_defaults() -> None:
    config = NodeConfig()
    assert config.ae_title == "DICOM_NODE"
    assert config.port == 11112
    assert config.data_dir == Path("./var")
    assert config.database.startswith("sqlite:///")


@pytest.mark.parametrize(
    "title",
    ["", "   ", "A" * 17, "BAD\\AE", "CTRL\x01AE"],
)
def test_bad_ae_titles_are_refused(title: str) -> None:
    with pytest.raises(ValueError):
        validate_ae_title(title)


def test_ae_title_padding_is_stripped() -> None:
    assert validate_ae_title("  NODE ") == "NODE"


def test_error_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "ae_title: NODE\n"
        "pipelines:\n"
        "  - called_ae: NODE\n"
        "    rules:\n"
        "      - name: r1\n"
        "        engines: [liver, kidney]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "pipelines.0.rules.0.engines.1" in message
    assert "line 6" in message


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ae_title: NODE\nport: 104\nspool_dir: /tmp\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "spool_dir" in str(info.value)
    assert "line 3" in str(info.value)


def test_unknown_destination_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pipelines:\n  - called_ae: NODE\n    destinations: [nowhere]\n")
    with pytest.raises(ConfigError, match="unknown destination 'nowhere'"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("tls: {ca_certificates: ca.pem}\n", "receiving over TLS needs the node's certificate"),
        (
            "tls: {certificate: node.pem, private_key: node.key,\n"
            "      require_client_certificate: true}\n",
            "require_client_certificate needs ca_certificates",
        ),
        (
            "destinations:\n  - {name: a, ae_title: A, host: 10.0.0.5, port: 104,\n"
            "     tls: {certificate: node.pem, ca_certificates: ca.pem}}\n",
            "certificate and private_key go together",
        ),
    ],
)
def test_tls_certificate_rules(tmp_path: Path, text: str, error: str) -> None:
    """The node needs its own certificate to receive over TLS; a destination may go
    without one (an archive that asks for none), but never with half of a key pair."""
    path = tmp_path / "tls.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_config(path)
    path.write_text(
        "destinations:\n  - {name: a, ae_title: A, host: 10.0.0.5, port: 104,\n"
        "     tls: {ca_certificates: ca.pem}}\n"
    )
    tls = load_config(path).destinations[0].tls
    assert tls is not None and tls.certificate is None


def test_bad_regex_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "pipelines:\n  - called_ae: NODE\n    rules:\n      - name: r\n"
        "        match: {study_description: '(unclosed'}\n        engines: [liver]\n"
    )
    with pytest.raises(ConfigError, match="study_description"):
        load_config(path)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("# only a comment: a truncated copy\n")
    with pytest.raises(ConfigError, match=r"node\.yaml: the file is empty"):
        load_config(path)


def test_a_relative_data_dir_is_taken_from_the_files_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    relative, absent = tmp_path / "etc" / "relative.yaml", tmp_path / "etc" / "absent.yaml"
    relative.write_text("data_dir: ./var\n")
    absent.write_text("ae_title: US_AI\n")
    assert load_config(relative).data_dir == tmp_path / "etc" / "var"
    assert load_config(absent).data_dir == Path("./var"), "the default: the working folder"
    relative.write_text(f"data_dir: {tmp_path / 'data'}\n")
    assert load_config(relative).data_dir == tmp_path / "data"


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pipelines: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("host", ["localhost", "10.0.0.0/24", "modality-3.hospital"])
def test_a_caller_host_must_be_an_ip_address(host: str) -> None:
    with pytest.raises(ValidationError, match="is not an IP address"):
        Caller(ae_title="US_ROOM_1", host=host)
    assert Caller(ae_title="US_ROOM_1", host=" 10.0.0.21 ").host == "10.0.0.21"
    assert same_address("10.0.0.21", "::ffff:10.0.0.21")
    assert same_address("::FFFF:10.0.0.21", "10.0.0.21")
    assert not same_address("10.0.0.21", "10.0.0.22")
