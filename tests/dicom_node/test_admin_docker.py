"""The Docker files read against the code (Docker itself is not available to the tests)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from dicom_node.admin.api import create_app
from dicom_node.cli import DATABASE_URL_ENV, build_config, make_parser
from dicom_node.config import load_config
from tests.dicom_node.conftest import NodeHarness

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _instruction(name: str) -> str:
    """The (continued) text of the first Dockerfile instruction ``name``."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name} (.+)$", text, re.MULTILINE)
    assert match is not None, name
    return match.group(1)


def _compose() -> dict[str, object]:
    return dict(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


def test_image_configuration_is_valid_and_listens_where_published() -> None:
    config = load_config(DOCKER / "node.yaml")
    assert (config.port, config.api_port, config.api_host) == (11112, 8080, "0.0.0.0")
    assert "EXPOSE 11112 8080" in (DOCKER / "Dockerfile").read_text()
    services = _compose()["services"]
    assert isinstance(services, dict)
    assert "127.0.0.1:11112:11112" in services["node"]["ports"]
    assert "127.0.0.1:8080:8080" in services["node"]["ports"]
    orthanc = config.destination("orthanc")
    assert orthanc is not None and orthanc.host == "orthanc"
    assert orthanc.ae_title == services["orthanc"]["environment"]["ORTHANC__DICOM_AET"]
    modalities = json.loads(services["orthanc"]["environment"]["ORTHANC__DICOM_MODALITIES"])
    assert modalities["dicom-node"] == [config.pipelines[0].called_ae, "node", config.port]


def test_entrypoint_and_commands_find_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    entrypoint = json.loads(_instruction("ENTRYPOINT"))
    command = json.loads(_instruction("CMD"))
    assert entrypoint[0] == "dicom-node"
    image_url = re.search(rf"{DATABASE_URL_ENV}=(\S+)", _instruction("ENV"))
    assert image_url is not None
    compose_env = _compose()["services"]["node"]["environment"]  # type: ignore[index]
    assert image_url.group(1) in compose_env[DATABASE_URL_ENV], "compose defaults to the image's"
    postgres = "postgresql+psycopg2://node:node@postgres/node"
    for url in (image_url.group(1), postgres):
        monkeypatch.setenv(DATABASE_URL_ENV, url)
        for argv in (command, ["jobs", "list", "--config", "/etc/dicom-node/node.yaml"]):
            args = make_parser().parse_args([*entrypoint[1:], *argv])
            assert args.config == "/etc/dicom-node/node.yaml"
            args.config = str(DOCKER / "node.yaml")
            assert build_config(args).database == url


def test_volumes_hold_spool_index_and_config() -> None:
    volumes = _instruction("VOLUME")
    config = load_config(DOCKER / "node.yaml")
    assert str(config.data_dir / "spool") in volumes
    assert "/var/lib/dicom-node/index" in volumes
    assert "/etc/dicom-node" in volumes, "admin changes replace the YAML file in its directory"
    node = _compose()["services"]["node"]  # type: ignore[index]
    mounts = {m.split(":")[1] for m in node["volumes"]}
    assert mounts == {"/var/lib/dicom-node/spool", "/var/lib/dicom-node/index", "/etc/dicom-node"}


def test_runs_as_non_root_with_a_healthcheck_on_an_open_endpoint(
    make_node: Callable[..., NodeHarness],
) -> None:
    assert _instruction("USER") == "node"
    check = json.loads(_instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    serve = json.loads(_instruction("CMD"))
    assert check[:2] == ["dicom-node", "health"]
    assert check[check.index("--config") + 1] == serve[serve.index("--config") + 1]
    assert load_config(DOCKER / "node.yaml").api_port, "the check asks the API's /healthz"
    remote = TestClient(create_app(make_node().node), client=("172.17.0.1", 40000))
    assert remote.get("/healthz").status_code == 200


def test_dockerignore_lets_the_build_inputs_in() -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text()
    for line in re.findall(
        r"^(?:COPY|ADD) (?:--\S+ )*(.+) \S+$", (DOCKER / "Dockerfile").read_text(), re.M
    ):
        for source in line.split():
            assert f"!{source}" in ignore or f"!{source}/**" in ignore, source
