"""The admin REST API against a started node (FastAPI's TestClient, real DICOM peers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from dicom_node.admin.api import MAX_BODY_BYTES, SECURITY_HEADERS, TOKEN_ENV, create_app
from dicom_node.admin.configstore import ConfigStore
from dicom_node.config import load_config
from tests.dicom_node.conftest import NodeHarness, free_port, make_study

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOCAL = ("127.0.0.1", 50000)
BASE = "http://127.0.0.1:8080"


@pytest.fixture
def harness(make_node: Callable[..., NodeHarness], monkeypatch: pytest.MonkeyPatch) -> NodeHarness:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return make_node(admin_token=TOKEN)


@pytest.fixture
def api(harness: NodeHarness) -> TestClient:
    return TestClient(create_app(harness.node), client=LOCAL, base_url=BASE)


def _pipeline(called_ae: str, **values: Any) -> dict[str, Any]:
    return {"called_ae": called_ae, **values}


def test_added_ae_title_accepts_new_associations_and_is_saved(
    harness: NodeHarness, api: TestClient
) -> None:
    assert not harness.associate(called="NEW_AE").is_established
    body = _pipeline("NEW_AE", allowed_callers=[{"ae_title": "MODALITY", "host": "127.0.0.1"}])
    response = api.post("/api/ae", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    assoc = harness.associate(calling="MODALITY", called="NEW_AE")
    assert assoc.is_established
    assoc.release()
    assert not harness.associate(calling="STRANGER", called="NEW_AE").is_established
    saved = load_config(harness.node.config_store.path)
    assert saved.pipeline_for("NEW_AE") is not None
    assert [p["called_ae"] for p in api.get("/api/ae").json()] == ["NODE", "NEW_AE"]


def test_updated_and_removed_ae_title(harness: NodeHarness, api: TestClient) -> None:
    only_pacs = _pipeline("NODE", allowed_callers=[{"ae_title": "PACS"}])
    assert api.put("/api/ae/NODE", json=only_pacs, headers=AUTH).status_code == 200
    assert not harness.associate(calling="MODALITY").is_established
    assoc = harness.associate(calling="PACS")
    assert assoc.is_established
    assoc.release()
    assert api.delete("/api/ae/NODE", headers=AUTH).status_code == 200
    assert not harness.associate(calling="PACS").is_established
    assert api.get("/api/ae/NODE").status_code == 404
    rejected = api.get("/api/associations", params={"accepted": False}).json()
    assert "no pipeline for called AE 'NODE'" in rejected[0]["reject_reason"]


@pytest.mark.parametrize(
    ("called_ae", "message"),
    [
        ("SEVENTEEN_CHARS_X", "longer than 16 characters"),
        ("BACK\\SLASH", "backslash or control character"),
        ("TAB\tAE", "backslash or control character"),
        ("    ", "empty or only spaces"),
    ],
)
def test_bad_ae_title_is_refused_with_the_rule(
    harness: NodeHarness, api: TestClient, called_ae: str, message: str
) -> None:
    response = api.post("/api/ae", json=_pipeline(called_ae), headers=AUTH)
    assert response.status_code == 422
    assert message in response.text
    assert not harness.node.config_store.path.exists()


def test_duplicate_ae_title_and_unknown_destination_are_refused(api: TestClient) -> None:
    duplicate = api.post("/api/ae", json=_pipeline("NODE"), headers=AUTH)
    assert duplicate.status_code == 422
    assert "already has a pipeline" in duplicate.json()["detail"]
    unknown = api.post("/api/ae", json=_pipeline("X", destinations=["nowhere"]), headers=AUTH)
    assert unknown.status_code == 422
    assert "unknown destination 'nowhere'" in unknown.json()["detail"]


def test_changes_need_a_configured_token(
    make_node: Callable[..., NodeHarness], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    api = TestClient(create_app(make_node().node), client=LOCAL, base_url=BASE)
    response = api.post("/api/ae", json=_pipeline("X"), headers=AUTH)
    assert response.status_code == 403
    assert "no admin token is configured" in response.json()["detail"]
    assert api.get("/api/ae").status_code == 200


def test_changes_need_the_right_token(api: TestClient) -> None:
    assert api.post("/api/ae", json=_pipeline("X")).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert api.post("/api/ae", json=_pipeline("X"), headers=wrong).status_code == 401
    assert api.post("/api/jobs/1/rerun", headers=wrong).status_code == 401


def test_token_from_environment_wins(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert api.post("/api/ae", json=_pipeline("X"), headers=AUTH).status_code == 401
    env_auth = {"Authorization": "Bearer from-env"}
    assert api.post("/api/ae", json=_pipeline("X"), headers=env_auth).status_code == 201


def test_remote_clients_need_the_token_to_read(harness: NodeHarness) -> None:
    remote = TestClient(create_app(harness.node), client=("192.0.2.7", 50000))
    assert remote.get("/api/studies").status_code == 401
    assert remote.get("/api/studies", headers=AUTH).status_code == 200
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert remote.get(open_path).status_code == 200


def test_local_reads_need_a_loopback_host_name(harness: NodeHarness) -> None:
    for base in ("http://localhost:8080", "http://[::1]:8080"):
        local = TestClient(create_app(harness.node), client=LOCAL, base_url=base)
        assert local.get("/api/status").status_code == 200, base
    rebound = TestClient(create_app(harness.node), client=LOCAL, base_url="http://evil.example")
    assert rebound.get("/api/studies").status_code == 401
    assert rebound.get("/api/studies", headers=AUTH).status_code == 200


def test_config_endpoints_never_show_the_token(api: TestClient) -> None:
    for path in ("/api/ae", "/api/destinations", "/api/status", "/openapi.json"):
        assert TOKEN not in api.get(path).text


def test_destination_add_echo_and_remove(harness: NodeHarness, api: TestClient) -> None:
    itself = {"name": "itself", "ae_title": "NODE", "host": "127.0.0.1", "port": harness.port}
    assert api.post("/api/destinations", json=itself, headers=AUTH).status_code == 201
    dead = {"name": "dead", "ae_title": "DEAD", "host": "127.0.0.1", "port": free_port()}
    assert api.post("/api/destinations", json=dead, headers=AUTH).status_code == 201
    ok = api.post("/api/destinations/itself/echo", headers=AUTH).json()
    assert ok["ok"] is True
    failed = api.post("/api/destinations/dead/echo", headers=AUTH).json()
    assert failed["ok"] is False
    health = {d["name"]: d for d in api.get("/api/destinations").json()}
    assert health["itself"]["healthy"] is True
    assert health["itself"]["last_success_at"] is not None
    assert health["dead"]["healthy"] is False
    assert "C-ECHO failed" in health["dead"]["last_error"]
    assert api.post("/api/destinations/nowhere/echo", headers=AUTH).status_code == 404
    assert api.delete("/api/destinations/dead", headers=AUTH).status_code == 200
    assert [d["name"] for d in api.get("/api/destinations").json()] == ["itself"]


def test_destination_in_use_cannot_be_removed(api: TestClient) -> None:
    archive = {"name": "archive", "ae_title": "ARCH", "host": "127.0.0.1", "port": 104}
    assert api.post("/api/destinations", json=archive, headers=AUTH).status_code == 201
    uses = _pipeline("NODE", destinations=["archive"])
    assert api.put("/api/ae/NODE", json=uses, headers=AUTH).status_code == 200
    response = api.delete("/api/destinations/archive", headers=AUTH)
    assert response.status_code == 422
    assert "used by pipeline(s) NODE" in response.json()["detail"]


def test_association_log_filters(harness: NodeHarness, api: TestClient) -> None:
    harness.store(make_study(2), calling="MODALITY")
    assert not harness.associate(called="UNKNOWN_AE").is_established
    rows = api.get("/api/associations").json()
    assert len(rows) == 2
    accepted = api.get("/api/associations", params={"accepted": True}).json()
    assert [(r["calling_ae"], r["instances"], r["outcome"]) for r in accepted] == [
        ("MODALITY", 2, "released")
    ]
    assert accepted[0]["bytes_received"] > 0
    assert accepted[0]["duration_seconds"] is not None
    unknown = api.get("/api/associations", params={"called_ae": "UNKNOWN_AE"}).json()
    assert len(unknown) == 1 and unknown[0]["accepted"] is False
    future = api.get("/api/associations", params={"since": "2999-01-01T00:00:00"}).json()
    assert future == []
    past = api.get("/api/associations", params={"since": "2000-01-01T00:00:00Z"}).json()
    assert len(past) == 2


def test_force_complete_and_rerun(harness: NodeHarness, api: TestClient) -> None:
    study = make_study(1)
    uid = str(study[0].StudyInstanceUID)
    harness.store(study)
    receiving = api.get("/api/studies", params={"state": "receiving"}).json()
    assert [s["study_instance_uid"] for s in receiving] == [uid]
    assert api.post(f"/api/studies/{uid}/complete", headers=AUTH).status_code == 200
    assert api.post("/api/studies/1.2.3/complete", headers=AUTH).status_code == 404
    assert harness.node.dispatcher.complete_due_studies()
    assert harness.node.dispatcher.run_next_job()
    done = api.get("/api/studies", params={"state": "completed"}).json()
    assert done[0]["jobs"][0]["state"] == "done"
    assert "objects=" in done[0]["jobs"][0]["summary"]
    job_id = done[0]["jobs"][0]["id"]
    assert api.post(f"/api/jobs/{job_id}/rerun", headers=AUTH).status_code == 200
    assert api.get("/api/jobs", params={"state": "queued"}).json()[0]["id"] == job_id
    assert api.post("/api/jobs/999/rerun", headers=AUTH).status_code == 409
    assert api.get("/api/studies", params={"state": "lost"}).status_code == 422


def test_failed_export_retry_and_discard(make_node: Callable[..., NodeHarness]) -> None:
    dead = {"name": "dead", "ae_title": "DEAD", "host": "127.0.0.1", "port": free_port()}
    harness = make_node(
        admin_token=TOKEN,
        destinations=[dead],
        pipeline={"called_ae": "NODE", "destinations": ["dead"]},
        export={"max_attempts": 1},
    )
    api = TestClient(create_app(harness.node), client=LOCAL, base_url=BASE)
    harness.store(make_study(1))
    harness.settle()
    harness.node.exporter.run_destination("dead")
    failed = api.get("/api/exports", params={"state": "failed"}).json()
    assert len(failed) == 1
    export_id = failed[0]["id"]
    assert api.get("/api/status").json()["queues"]["exports"]["failed"] == 1
    assert api.post(f"/api/exports/{export_id}/retry", headers=AUTH).status_code == 200
    assert api.post(f"/api/exports/{export_id}/discard", headers=AUTH).status_code == 409
    harness.node.exporter.run_destination("dead")
    assert api.post(f"/api/exports/{export_id}/discard", headers=AUTH).status_code == 200
    assert api.get("/api/exports", params={"state": "discarded"}).json()[0]["id"] == export_id
    metrics = api.get("/metrics").text
    assert 'dicom_node_exports_by_state{state="discarded"} 1.0' in metrics
    assert 'dicom_node_exports_total{destination="dead",outcome="error_queue"}' in metrics


def test_health_readiness_and_metrics(harness: NodeHarness, api: TestClient) -> None:
    harness.store(make_study(2))
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"ready": True, "problems": []}
    text = api.get("/metrics").text
    for name in (
        'dicom_node_associations_total{called_ae="NODE",outcome="accepted"}',
        'dicom_node_instances_received_total{called_ae="NODE"}',
        "dicom_node_bytes_received_total",
        'dicom_node_jobs{state="queued"} 0.0',
        "dicom_node_studies_receiving 1.0",
        "dicom_node_spool_free_bytes",
        "dicom_node_engine_seconds_bucket",
    ):
        assert name in text
    harness.node.request_stop()
    not_ready = api.get("/readyz")
    assert not_ready.status_code == 503
    assert "receiver or a worker is not running" in not_ready.json()["problems"][0]


def test_not_ready_below_the_disk_floor(
    harness: NodeHarness, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    floor = harness.node.config().limits.model_copy(update={"min_free_disk_mb": 10})
    harness.node.reconfigure(harness.node.config().model_copy(update={"limits": floor}))
    monkeypatch.setattr(harness.node.spool, "free_bytes", lambda: 5 * 2**20)
    response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["problems"] == [
        "free disk is below the floor: new associations are refused"
    ]
    assert api.get("/api/status").json()["refusing_for_disk"] is True
    assert "dicom_node_spool_free_bytes 5.24288e+06" in api.get("/metrics").text


def test_openapi_documents_the_endpoints(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/api/ae", "/api/destinations/{name}/echo", "/api/exports/{export_id}/retry"):
        assert path in paths
    # No documentation page: FastAPI's loads its scripts from a CDN a hospital network
    # does not reach, and they would run beside the status page that holds the token.
    assert api.get("/docs").status_code == 404


def test_saved_file_keeps_other_keys_and_a_backup(harness: NodeHarness, api: TestClient) -> None:
    path = harness.node.config_store.path
    path.write_text("# mine\nmanufacturer: Ours\n")
    path.chmod(0o640)
    refused = api.post("/api/ae", json=_pipeline("A"), headers=AUTH)
    assert refused.status_code == 422 and "changed since the node read it" in refused.text
    harness.node.config_store = ConfigStore(path, harness.node.config, harness.node.reconfigure)
    assert api.post("/api/ae", json=_pipeline("A"), headers=AUTH).status_code == 201
    assert api.post("/api/ae", json=_pipeline("B"), headers=AUTH).status_code == 201
    data = yaml.safe_load(path.read_text())
    assert data["manufacturer"] == "Ours"
    assert [p["called_ae"] for p in data["pipelines"]] == ["NODE", "A", "B"]
    backup = yaml.safe_load(path.with_name("config.yaml.bak").read_text())
    assert [p["called_ae"] for p in backup["pipelines"]] == ["NODE", "A"]
    assert path.stat().st_mode & 0o777 == 0o640


def test_new_file_is_private(harness: NodeHarness, api: TestClient) -> None:
    assert api.post("/api/ae", json=_pipeline("A"), headers=AUTH).status_code == 201
    assert harness.node.config_store.path.stat().st_mode & 0o777 == 0o600
    assert not harness.node.config_store.path.with_name("config.yaml.bak").exists()


def test_after_an_outage_every_export_of_a_destination_goes_again_now(
    make_node: Callable[..., NodeHarness],
) -> None:
    dead = {"name": "dead", "ae_title": "DEAD", "host": "127.0.0.1", "port": free_port()}
    harness = make_node(
        admin_token=TOKEN,
        destinations=[dead],
        pipeline={"called_ae": "NODE", "destinations": ["dead"]},
        export={"max_attempts": 2, "backoff_initial_seconds": 600},
    )
    api = TestClient(create_app(harness.node), client=LOCAL, base_url=BASE)
    for _ in range(2):
        harness.store(make_study(1))
        harness.settle()
    harness.node.exporter.run_destination("dead")  # both fail once: 10 min of backoff
    harness.clock.advance(600)
    first = api.get("/api/exports").json()[-1]["id"]
    harness.node.exporter.run_destination("dead")  # both in the error queue now
    assert [e["state"] for e in api.get("/api/exports").json()] == ["failed", "failed"]
    assert api.post(f"/api/exports/{first}/retry", headers=AUTH).status_code == 200
    harness.node.exporter.run_destination("dead")  # fails again: backoff, not the queue
    pending = api.get("/api/exports", params={"state": "pending"}).json()
    assert [e["id"] for e in pending] == [first]
    assert pending[0]["next_attempt_at"] > harness.clock.now().isoformat()
    reply = api.post("/api/destinations/dead/retry", headers=AUTH)
    assert reply.json() == {"destination": "dead", "exports": 2}
    due = api.get("/api/exports").json()
    assert all(e["state"] == "pending" and e["attempts"] == 0 for e in due)
    assert all(e["next_attempt_at"] <= harness.clock.now().isoformat() for e in due)
    assert api.post("/api/destinations/dead/retry").status_code == 401


def test_default_retry_budget_outlasts_a_night() -> None:
    from dicom_node.config import ExportPolicy
    from dicom_node.export import backoff_seconds

    policy = ExportPolicy()
    waited = sum(backoff_seconds(attempt, policy) for attempt in range(1, policy.max_attempts))
    assert waited >= 20 * 3600


def test_a_node_below_its_disk_floor_says_so_before_any_association(
    make_node: Callable[..., NodeHarness],
) -> None:
    harness = make_node(limits={"min_free_disk_mb": 10**12})
    api = TestClient(create_app(harness.node), client=LOCAL, base_url=BASE)
    assert "dicom_node_refusing_for_disk 1.0" in api.get("/metrics").text
    status = api.get("/api/status").json()
    assert status["ready"] is False and status["refusing_for_disk"] is True
    assert status["problems"] == api.get("/readyz").json()["problems"]


def test_a_destination_moves_to_a_new_address(harness: NodeHarness, api: TestClient) -> None:
    pacs = {"name": "pacs", "ae_title": "PACS", "host": "10.0.0.9", "port": 104}
    assert api.post("/api/destinations", json=pacs, headers=AUTH).status_code == 201
    moved = {**pacs, "host": "10.0.1.9", "port": 11112}
    assert api.put("/api/destinations/pacs", json=moved).status_code == 401
    assert api.put("/api/destinations/pacs", json=moved, headers=AUTH).status_code == 200
    (row,) = [d for d in api.get("/api/destinations").json() if d["name"] == "pacs"]
    assert (row["host"], row["port"]) == ("10.0.1.9", 11112)
    renamed = api.put("/api/destinations/pacs", json={**moved, "name": "other"}, headers=AUTH)
    assert renamed.status_code == 422
    missing = api.put("/api/destinations/nope", json={**moved, "name": "nope"}, headers=AUTH)
    assert missing.status_code == 404


def test_every_change_asked_of_the_api_is_logged_with_its_client(
    harness: NodeHarness, api: TestClient
) -> None:
    from structlog.testing import capture_logs

    remote = TestClient(create_app(harness.node), client=("192.0.2.7", 50000))
    with capture_logs() as logs:
        api.post("/api/jobs/999/rerun", headers=AUTH)
        api.post("/api/jobs/999/rerun")
        api.get("/api/jobs")
        remote.get("/api/jobs", headers={"Authorization": "Bearer guess"})
    audit = [e for e in logs if e["event"] == "admin_request"]
    assert [(e["path"], e["client"], e["token"], e["status"], e["log_level"])
            for e in audit] == [
        ("/api/jobs/999/rerun", "127.0.0.1", True, 409, "info"),
        ("/api/jobs/999/rerun", "127.0.0.1", False, 401, "warning"),
        ("/api/jobs", "192.0.2.7", True, 401, "warning"),  # a read refused: a guess logged
    ]


def test_a_change_is_refused_before_its_body_is_read(api: TestClient) -> None:
    # Without the token, a body that is not even JSON gets 401, not 422: never parsed.
    garbage = api.post("/api/ae", content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert garbage.status_code == 401
    huge = b"x" * (MAX_BODY_BYTES + 1)
    for headers in ({}, AUTH):
        assert api.post("/api/ae", content=huge, headers=headers).status_code == 413
    chunked = api.post("/api/ae", content=iter([b"{}"]), headers=AUTH)  # no length announced
    assert chunked.status_code == 411
    assert api.post("/api/ae", json=_pipeline("SMALL"), headers=AUTH).status_code == 201


def test_answers_carry_a_content_security_policy(api: TestClient) -> None:
    for path in ("/", "/api/status", "/openapi.json"):
        headers = api.get(path).headers
        assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, path
    assert api.post("/api/ae", json=_pipeline("X")).headers["X-Frame-Options"] == "DENY"
