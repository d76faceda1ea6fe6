"""The admin REST API (FastAPI) and the status page it serves.

Read-only endpoints are open to clients on the loopback interface; other
clients need the bearer token.  Every endpoint that changes state needs the
token; without a configured token those endpoints are refused (403).
``/healthz``, ``/readyz`` and ``/metrics`` are always open.  The API is described
at ``/openapi.json`` (no documentation page: FastAPI's loads its scripts from a CDN,
which a hospital network does not reach and which would run beside the status page).

A request that would change something is refused before its body is read when its
token is wrong or missing, or when its body is larger than :data:`MAX_BODY_BYTES` (or
of unannounced length); every refusal (401, 403) is logged.  Answers carry a content
security policy that lets the status page load its own files only.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

import dicom_node
from dicom_node import metrics
from dicom_node.admin.client import TOKEN_ENV
from dicom_node.admin.configstore import NotFound
from dicom_node.admin.operations import (
    as_utc,
    destinations_with_health,
    echo_destination,
    refresh_gauges,
    studies_with_results,
)
from dicom_node.config import ConfigError, Destination, Pipeline
from dicom_node.index import ExportState, IndexQueries, JobState

if TYPE_CHECKING:
    from dicom_node.service import Node

__all__ = ["TOKEN_ENV", "create_app"]

LOGGER = structlog.get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"

_bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
Limit = Annotated[int, Query(ge=1, le=1000)]


MAX_BODY_BYTES = 64 * 1024
"""Largest request body taken (a pipeline or destination is some hundred bytes)."""

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods that need the token."""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
"""Headers on every answer."""

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_loopback(request: Request) -> bool:
    """A client on this host that asked for this host by a loopback name.

    Checking the Host header too keeps a web page that rebinds its DNS name
    to 127.0.0.1 from reading the API through a local browser.
    """
    if request.client is None:
        return False
    try:
        client_local = ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False
    host = (request.url.hostname or "").strip("[]").lower()
    return client_local and host in LOOPBACK_NAMES


def create_app(node: Node) -> FastAPI:
    """The API application bound to a node.

    Parameters
    ----------
    node:
        The running node: its configuration, config store, index and spool.
    """
    app = FastAPI(
        title="Ultrasound AI DICOM node",
        version=dicom_node.__version__,
        description=__doc__,
        docs_url=None,
        redoc_url=None,
    )
    queries = IndexQueries(node.index)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        """Refuse a change before its body is read: a body too large or of unannounced
        length, a missing or wrong token."""
        if request.method in CHANGES:
            length = request.headers.get("content-length")
            if "transfer-encoding" in request.headers:
                return JSONResponse({"detail": "a body of announced length is required"}, 411)
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return JSONResponse(
                    {"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}, 413)
            refused = change_refusal(await _bearer(request))
            if refused is not None:
                return JSONResponse({"detail": refused.detail}, refused.status_code,
                                    headers=refused.headers)
        return await call_next(request)

    @app.middleware("http")
    async def audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        """Log every change asked of the API and every refusal: what, from where, with a
        token or not, and the answer (the audit trail of administrators' actions and of
        attempts to guess the token)."""
        response = await call_next(request)
        refused = response.status_code in (401, 403)
        if request.method in CHANGES or refused:
            (LOGGER.warning if refused else LOGGER.info)(
                "admin_request", method=request.method, path=request.url.path,
                client=request.client.host if request.client else None,
                token="authorization" in request.headers, status=response.status_code)
        response.headers.update(SECURITY_HEADERS)
        return response

    def expected_token() -> str | None:
        token = os.environ.get(TOKEN_ENV)
        if token:
            return token
        configured = node.config().admin_token
        return configured.get_secret_value() if configured is not None else None

    def token_ok(credentials: HTTPAuthorizationCredentials | None, expected: str) -> bool:
        return credentials is not None and hmac.compare_digest(
            credentials.credentials.encode(), expected.encode()
        )

    def change_refusal(credentials: HTTPAuthorizationCredentials | None
                       ) -> HTTPException | None:
        """Why a change with these credentials is refused (``None``: it is not)."""
        expected = expected_token()
        if not expected:
            return HTTPException(
                403,
                "changes are disabled: no admin token is configured "
                f"(set admin_token in the configuration or {TOKEN_ENV})",
            )
        if not token_ok(credentials, expected):
            return HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return None

    def may_change(credentials: Credentials) -> None:
        """The token check of a change (``guard`` makes it before the body is read; kept
        on the endpoints so that OpenAPI shows the scheme)."""
        refused = change_refusal(credentials)
        if refused is not None:
            raise refused

    def may_read(request: Request, credentials: Credentials) -> None:
        if _is_loopback(request):
            return
        expected = expected_token()
        if not expected or not token_ok(credentials, expected):
            raise HTTPException(
                401,
                "clients outside this host need the bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    if not expected_token():
        LOGGER.warning("admin_api_read_only", reason=f"no admin_token and no {TOKEN_ENV}")
    read = [Depends(may_read)]
    change = [Depends(may_change)]

    @app.exception_handler(ConfigError)
    async def _config_error(_request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(LookupError)
    async def _not_found(_request: Request, exc: LookupError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    # -- health ------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    def readiness() -> list[str]:
        """What keeps the node from taking studies now (nothing when it is ready)."""
        problems = []
        if not node.is_running():
            problems.append("the DICOM receiver or a worker is not running")
        try:
            queries.counts()
        except Exception as exc:
            problems.append(f"the index does not answer: {type(exc).__name__}")
        if refusing_for_disk(node.spool.free_bytes()):
            problems.append("free disk is below the floor: new associations are refused")
        unwritable = node.spool.write_problem()
        if unwritable is not None:
            problems.append(unwritable)
        return problems

    def refusing_for_disk(free: int) -> bool:
        refusing = free < node.config().limits.min_free_disk_mb * 1024 * 1024
        metrics.ADMISSION_REFUSED.set(int(refusing))
        return refusing

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """Ready when the receiver listens, the index answers, the disk is above its floor
        and the spool can be written."""
        problems = readiness()
        status = 200 if not problems else 503
        return JSONResponse(
            status_code=status, content={"ready": not problems, "problems": problems}
        )

    @app.get("/metrics", tags=["health"])
    def prometheus() -> Response:
        """Prometheus metrics (no patient data in any label)."""
        free = node.spool.free_bytes()
        refresh_gauges(queries, free)
        refusing_for_disk(free)
        metrics.RECEIVING_PROCESSES.set(node.receiving_processes())
        return Response(metrics.exposition(node.receiver_counters()),
                        media_type=CONTENT_TYPE_LATEST)

    # -- status page -------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/status", dependencies=read, tags=["status"])
    def status() -> dict[str, Any]:
        """Node identity, queue counts, disk and error counts."""
        config = node.config()
        free = node.spool.free_bytes()
        counts = refresh_gauges(queries, free)
        problems = readiness()
        return {
            "version": dicom_node.__version__,
            "ae_title": config.ae_title,
            "dicom_port": node.port,
            "receiving_processes": node.receiving_processes(),
            "called_aes": [p.called_ae for p in config.pipelines],
            "ready": not problems,
            "problems": problems,
            "spool_free_bytes": free,
            "refusing_for_disk": refusing_for_disk(free),
            "queues": counts,
        }

    # -- AE titles (pipelines) ---------------------------------------------------------

    @app.get("/api/ae", dependencies=read, tags=["ae titles"])
    def list_ae() -> list[dict[str, Any]]:
        """Called AE titles and their pipelines."""
        return [p.model_dump(mode="json") for p in node.config().pipelines]

    @app.get("/api/ae/{called_ae}", dependencies=read, tags=["ae titles"])
    def get_ae(called_ae: str) -> dict[str, Any]:
        """One called AE title's pipeline."""
        return node.config_store.pipeline(called_ae).model_dump(mode="json")

    @app.post("/api/ae", status_code=201, dependencies=change, tags=["ae titles"])
    def add_ae(pipeline: Pipeline) -> dict[str, Any]:
        """Add a called AE title; new associations to it are accepted at once."""
        node.config_store.add_pipeline(pipeline)
        return pipeline.model_dump(mode="json")

    @app.put("/api/ae/{called_ae}", dependencies=change, tags=["ae titles"])
    def update_ae(called_ae: str, pipeline: Pipeline) -> dict[str, Any]:
        """Replace a called AE title's pipeline (the body's ``called_ae`` may rename it)."""
        node.config_store.update_pipeline(called_ae, pipeline)
        return pipeline.model_dump(mode="json")

    @app.delete("/api/ae/{called_ae}", dependencies=change, tags=["ae titles"])
    def remove_ae(called_ae: str) -> dict[str, str]:
        """Remove a called AE title; new associations to it are rejected."""
        node.config_store.remove_pipeline(called_ae)
        return {"removed": called_ae}

    # -- destinations ------------------------------------------------------------------

    @app.get("/api/destinations", dependencies=read, tags=["destinations"])
    def list_destinations() -> list[dict[str, Any]]:
        """Destinations with their last success and failure."""
        return destinations_with_health(node.config(), queries)

    @app.post("/api/destinations", status_code=201, dependencies=change, tags=["destinations"])
    def add_destination(destination: Destination) -> dict[str, Any]:
        """Add a destination (name it in a pipeline to send results there)."""
        node.config_store.add_destination(destination)
        return destination.model_dump(mode="json")

    @app.put("/api/destinations/{name}", dependencies=change, tags=["destinations"])
    def update_destination(name: str, destination: Destination) -> dict[str, Any]:
        """Change a destination's AE title, address or overlay choice (TLS kept unless
        given); pending exports go to the new address."""
        if destination.name != name:
            raise HTTPException(422, "a destination keeps its name: remove and add to rename")
        node.config_store.update_destination(destination)
        return destination.model_dump(mode="json")

    @app.delete("/api/destinations/{name}", dependencies=change, tags=["destinations"])
    def remove_destination(name: str) -> dict[str, str]:
        """Remove a destination no pipeline uses."""
        node.config_store.remove_destination(name)
        return {"removed": name}

    @app.post("/api/destinations/{name}/echo", dependencies=change, tags=["destinations"])
    def echo(name: str) -> dict[str, Any]:
        """C-ECHO a destination; the outcome becomes its last success or failure."""
        return echo_destination(node.config(), node.index, node.clock, name)

    # -- listings ----------------------------------------------------------------------

    @app.get("/api/associations", dependencies=read, tags=["listings"])
    def associations(
        limit: Limit = 100,
        called_ae: str | None = None,
        calling_ae: str | None = None,
        accepted: bool | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The association log, newest first (``since`` without a zone is UTC)."""
        return queries.associations(
            limit=limit,
            calling_ae=calling_ae,
            called_ae=called_ae,
            accepted=accepted,
            since=as_utc(since) if since is not None else None,
        )

    @app.get("/api/studies", dependencies=read, tags=["listings"])
    def studies(limit: Limit = 20, state: str | None = None) -> list[dict[str, Any]]:
        """Recent studies with their jobs and exports (``state``: receiving|completed)."""
        try:
            return studies_with_results(queries, limit=limit, state=state)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.get("/api/jobs", dependencies=read, tags=["listings"])
    def jobs(limit: Limit = 100, state: JobState | None = None) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        return queries.jobs(state, limit=limit)

    @app.get("/api/exports", dependencies=read, tags=["listings"])
    def exports(limit: Limit = 100, state: ExportState | None = None) -> list[dict[str, Any]]:
        """Exports, newest first (``failed`` is the error queue)."""
        return queries.exports(state, limit=limit)

    # -- actions -----------------------------------------------------------------------

    @app.post("/api/studies/{study_uid}/complete", dependencies=change, tags=["actions"])
    def complete_study(study_uid: str) -> dict[str, Any]:
        """Force a study complete now; the dispatcher creates its job."""
        count = node.index.force_complete(study_uid)
        if count == 0:
            raise NotFound(f"no study {study_uid}")
        LOGGER.info("study_force_completed", study_instance_uid=study_uid)
        return {"study_instance_uid": study_uid, "pipelines": count}

    @app.post("/api/jobs/{job_id}/rerun", dependencies=change, tags=["actions"])
    def rerun_job(job_id: int) -> dict[str, Any]:
        """Queue a finished or failed job again."""
        if not node.index.requeue_job(job_id):
            raise HTTPException(409, f"job {job_id} cannot be re-run (missing or running)")
        LOGGER.info("job_requeued", job_id=job_id)
        return {"job_id": job_id, "state": JobState.QUEUED.value}

    @app.post("/api/exports/{export_id}/retry", dependencies=change, tags=["actions"])
    def retry_export(export_id: int) -> dict[str, Any]:
        """Send an export again now: a failed or discarded one back to its queue, a pending
        one due at once."""
        if not node.index.retry_export(export_id, node.clock.now()):
            raise HTTPException(409, f"export {export_id} is delivered or does not exist")
        LOGGER.info("export_retry_requested", export_id=export_id)
        return {"export_id": export_id, "state": ExportState.PENDING.value}

    @app.post("/api/destinations/{name}/retry", dependencies=change, tags=["actions"])
    def retry_destination(name: str) -> dict[str, Any]:
        """Send every failed or pending export of a destination again now (after an
        outage)."""
        count = node.index.retry_exports(name, node.clock.now())
        LOGGER.info("destination_retry_requested", destination=name, exports=count)
        return {"destination": name, "exports": count}

    @app.post("/api/exports/{export_id}/discard", dependencies=change, tags=["actions"])
    def discard_export(export_id: int) -> dict[str, Any]:
        """Give up on a failed export."""
        if not node.index.discard_export(export_id):
            raise HTTPException(409, f"export {export_id} is not in the error queue")
        LOGGER.info("export_discard_requested", export_id=export_id)
        return {"export_id": export_id, "state": ExportState.DISCARDED.value}

    return app
