"""DICOM TLS for receiving (DCMTK storescu as the modality) and for exporting.

The test makes its own CA, node, modality, archive and impostor certificates
with openssl.  TLS 1.2 or newer only; client certificates are verified.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import Dataset

from dicom_node.clock import ManualClock
from dicom_node.config import Destination, Pipeline, TLSConfig
from dicom_node.export import client_ssl_context
from dicom_node.index import ExportState, IndexQueries
from dicom_node.service import Node, Stages
from dicom_node.stages import build, decode
from tests.dicom_node.conftest import make_study, node_config
from tests.dicom_node.fake_engine import FakeAnalyzer
from tests.peers import require
from tests.reliability.harness import CountingStorageSCP, requestor

pytestmark = pytest.mark.integration


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _key_and_request(folder: Path, name: str) -> tuple[Path, Path]:
    key, csr = folder / f"{name}.key", folder / f"{name}.csr"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr))
    return key, csr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TLSConfig]:
    """TLS settings of: node, modality, archive (signed by the test CA for 127.0.0.1), an
    archive signed by it for another host name, and an impostor (self-signed)."""
    require("openssl")
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_csr = _key_and_request(folder, "test-ca")
    ca = folder / "ca.pem"
    _openssl(
        "x509", "-req", "-in", str(ca_csr), "-signkey", str(ca_key), "-days", "2", "-out", str(ca)
    )
    settings = {}
    for name, alt_name in (
        ("node", "IP:127.0.0.1"),
        ("modality", "IP:127.0.0.1"),
        ("archive", "IP:127.0.0.1"),
        ("misnamed", "DNS:archive.example.org"),
    ):
        key, csr = _key_and_request(folder, name)
        cert = folder / f"{name}.pem"
        extensions = folder / f"{name}.ext"
        extensions.write_text(f"subjectAltName={alt_name}\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(extensions),
            "-out",
            str(cert),
        )
        settings[name] = TLSConfig(
            certificate=cert,
            private_key=key,
            ca_certificates=ca,
            require_client_certificate=True,
        )
    key, csr = _key_and_request(folder, "impostor")
    cert = folder / "impostor.pem"
    _openssl("x509", "-req", "-in", str(csr), "-signkey", str(key), "-days", "2", "-out", str(cert))
    settings["impostor"] = TLSConfig(certificate=cert, private_key=key, ca_certificates=ca)
    return settings


def storescu_tls(port: int, files: list[Path], tls: TLSConfig | None) -> int:
    """storescu over TLS with ``tls``'s key and certificate (plain TCP when ``None``)."""
    require("storescu")
    security = (
        ["+tls", str(tls.private_key), str(tls.certificate), "+cf", str(tls.ca_certificates)]
        if tls is not None
        else []
    )
    done = subprocess.run(
        [
            "storescu",
            "-aec",
            "NODE",
            "-aet",
            "MODALITY",
            *security,
            "-to",
            "10",
            "-ta",
            "10",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    return done.returncode


@pytest.fixture
def tls_node(tmp_path: Path, pki: dict[str, TLSConfig]) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(**overrides: object) -> Node:
        config = node_config(tmp_path, **{"tls": pki["node"], **overrides})
        node = Node(
            config, Stages(analyze=FakeAnalyzer(), decode=decode, build=build), ManualClock()
        )
        node.start(workers=False)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


def _files(folder: Path, datasets: list[Dataset]) -> list[Path]:
    paths = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_receiving_over_tls_with_client_certificates(
    tmp_path: Path,
    pki: dict[str, TLSConfig],
    tls_node: Callable[..., Node],
    figures: dict[str, object],
) -> None:
    node = tls_node()
    assert node.port is not None
    files = _files(tmp_path, make_study(2))
    # A peer that opens TCP and never says hello must not block anyone.
    with socket.create_connection(("127.0.0.1", node.port)):
        assert storescu_tls(node.port, files, pki["modality"]) == 0
    assert len(node.spool.instance_files()) == 2
    assert storescu_tls(node.port, files, pki["impostor"]) != 0, "untrusted client accepted"
    assert storescu_tls(node.port, files, None) != 0, "plain TCP accepted on the TLS port"

    old = client_ssl_context(pki["modality"])
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    assoc = requestor().associate(
        "127.0.0.1", node.port, ae_title="NODE", tls_args=(old, "127.0.0.1")
    )
    assert not assoc.is_established, "TLS 1.1 accepted"

    modern = client_ssl_context(pki["modality"])
    assoc = requestor().associate(
        "127.0.0.1", node.port, ae_title="NODE", tls_args=(modern, "127.0.0.1")
    )
    assert assoc.is_established
    assert assoc.dul.socket.socket.version() in ("TLSv1.2", "TLSv1.3")
    assoc.release()
    records = IndexQueries(node.index).associations()
    figures.update(tls_accepted=sum(r["accepted"] for r in records), refused_handshakes=3)


def _server_context(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    context.load_verify_locations(str(tls.ca_certificates))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _send_and_analyse(node: Node, modality: ssl.SSLContext, count: int) -> None:
    """A study of ``count`` images sent over TLS, completed and analysed, not yet exported."""
    assert node.port is not None
    assoc = requestor().associate(
        "127.0.0.1", node.port, ae_title="NODE", tls_args=(modality, "127.0.0.1")
    )
    assert [int(assoc.send_c_store(ds).Status) for ds in make_study(count)] == [0] * count
    assoc.release()
    assert node.receiver.writer.flush(30)
    assert isinstance(node.clock, ManualClock)
    node.clock.advance(60)
    node.dispatcher.complete_due_studies()
    assert node.dispatcher.run_next_job()


def test_a_presented_client_certificate_is_verified_even_when_none_is_required(
    tmp_path: Path, pki: dict[str, TLSConfig], tls_node: Callable[..., Node]
) -> None:
    """With ``ca_certificates`` but not ``require_client_certificate`` a caller may come
    without a certificate, but one it presents must be signed by the CA."""
    node = tls_node(tls=pki["node"].model_copy(update={"require_client_certificate": False}))
    assert node.port is not None
    files = _files(tmp_path, make_study(2))
    assert storescu_tls(node.port, files, pki["impostor"]) != 0, "untrusted certificate accepted"
    assert storescu_tls(node.port, files, pki["modality"]) == 0
    anonymous = client_ssl_context(TLSConfig(ca_certificates=pki["node"].ca_certificates))
    assoc = requestor().associate(
        "127.0.0.1", node.port, ae_title="NODE", tls_args=(anonymous, "127.0.0.1")
    )
    assert assoc.is_established, "a caller without a certificate refused"
    assoc.release()
    assert len(node.spool.instance_files()) == 2


def test_exporting_over_tls_verifies_the_archive(
    tmp_path: Path, pki: dict[str, TLSConfig], tls_node: Callable[..., Node]
) -> None:
    with (
        CountingStorageSCP(ssl_context=_server_context(pki["archive"])) as archive,
        CountingStorageSCP(ssl_context=_server_context(pki["impostor"])) as impostor,
    ):
        destinations = [
            Destination(
                name=name, ae_title="COUNTER", host="127.0.0.1", port=scp.port, tls=pki["node"]
            )
            for name, scp in (("secure", archive), ("impostor", impostor))
        ]
        node = tls_node(
            destinations=destinations,
            pipeline=Pipeline(called_ae="NODE", destinations=["secure", "impostor"]),
        )
        _send_and_analyse(node, client_ssl_context(pki["modality"]), 2)
        node.exporter.run_destination("secure")
        node.exporter.run_destination("impostor")
        states = {e["destination"]: e for e in IndexQueries(node.index).exports()}
    assert states["secure"]["state"] == ExportState.DELIVERED.value
    assert len(archive.received) == len(set(archive.received)) > 0
    assert states["impostor"]["state"] == ExportState.PENDING.value
    assert "TLS certificate was not accepted" in states["impostor"]["last_error"]
    assert impostor.received == [], "results sent to a server we cannot verify"


def test_a_destination_certificate_must_name_its_host_when_asked(
    pki: dict[str, TLSConfig], tls_node: Callable[..., Node]
) -> None:
    """``verify_hostname`` refuses an archive whose certificate, though signed by the
    trusted CA, names another host; without it the CA's signature is enough (IHE ATNA)."""
    with CountingStorageSCP(ssl_context=_server_context(pki["misnamed"])) as archive:
        checked = pki["node"].model_copy(update={"verify_hostname": True})
        destinations = [
            Destination(name=name, ae_title="COUNTER", host="127.0.0.1", port=archive.port,
                        tls=tls)
            for name, tls in (("named", checked), ("trusted", pki["node"]))
        ]
        node = tls_node(
            destinations=destinations,
            pipeline=Pipeline(called_ae="NODE", destinations=["named", "trusted"]),
        )
        modality = client_ssl_context(pki["modality"].model_copy(update={"verify_hostname": True}))
        _send_and_analyse(node, modality, 1)
        node.exporter.run_destination("named")
        delivered_unchecked = len(archive.received)
        node.exporter.run_destination("trusted")
        states = {e["destination"]: e for e in IndexQueries(node.index).exports()}
    assert delivered_unchecked == 0
    assert states["named"]["state"] == ExportState.PENDING.value
    assert "address mismatch" in states["named"]["last_error"], states["named"]["last_error"]
    assert states["trusted"]["state"] == ExportState.DELIVERED.value
    assert len(archive.received) > 0


def test_a_destination_that_asks_for_no_client_certificate(
    pki: dict[str, TLSConfig], tls_node: Callable[..., Node]
) -> None:
    """A destination's ``tls`` may hold only the CA: the archive is verified, and the
    node presents no certificate of its own (many archives ask for none)."""
    server = _server_context(pki["archive"])
    server.verify_mode = ssl.CERT_NONE
    with CountingStorageSCP(ssl_context=server) as archive:
        verify_only = TLSConfig(ca_certificates=pki["node"].ca_certificates)
        destination = Destination(name="archive", ae_title="COUNTER", host="127.0.0.1",
                                  port=archive.port, tls=verify_only)
        node = tls_node(destinations=[destination],
                        pipeline=Pipeline(called_ae="NODE", destinations=["archive"]))
        _send_and_analyse(node, client_ssl_context(pki["modality"]), 1)
        node.exporter.run_destination("archive")
        states = [e["state"] for e in IndexQueries(node.index).exports()]
    assert states and set(states) == {ExportState.DELIVERED.value}
    assert len(archive.received) > 0


def test_every_receiving_process_speaks_tls(
    pki: dict[str, TLSConfig], tls_node: Callable[..., Node]
) -> None:
    node = tls_node(receivers=2)
    assert node.port is not None and node.load is not None
    held = [
        requestor().associate(
            "127.0.0.1", node.port, ae_title="NODE",
            tls_args=(client_ssl_context(pki["modality"]), "127.0.0.1"),
        )
        for _ in range(2)
    ]
    assert all(assoc.is_established for assoc in held)
    assert node.load.loads() == [1, 1], "one association in each process"
    assert [int(assoc.send_c_echo().Status) for assoc in held] == [0, 0]
    for assoc in held:
        assoc.release()
