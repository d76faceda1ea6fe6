"""Dispatch: complete studies, run their jobs through the engines, queue results.

A job is a row in the index.  A worker claims it with row locking, decodes the
study's ultrasound images, runs the routed engines on every frame through the
injected analyser, hands the findings to the result builders, spools the result
objects and queues one export per destination.

Failures are per image: an image that cannot be decoded, or on which an engine
fails, is reported as not assessed with the reason, and the study's other
images are still analysed and reported.  A job fails (with the reason
recorded, and nothing exported) only when an engine failed and no image could
be analysed, or when the results cannot be built or stored.
"""

from __future__ import annotations

import errno
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import structlog
from pydicom import Dataset, dcmread

from dicom_node import metrics
from dicom_node.ahead import AheadResults, FileStamp
from dicom_node.clock import Clock
from dicom_node.completion import completion_reason
from dicom_node.config import Completion, NodeConfig, Pipeline
from dicom_node.index import Index, JobInput, JobState
from dicom_node.logs import describe_error
from dicom_node.network import ULTRASOUND_SOP_CLASSES
from dicom_node.routing import RoutingAttributes, engines_for, export_targets
from dicom_node.spool import Spool, SpoolError
from inference.engines.base import ImageInput
from inference.findings import (
    AnatomyValues,
    ImageResult,
    NotAssessed,
    NotAssessedReasonValues,
    StudyResult,
)
from sr_templates.sources import one_patient

LOGGER = structlog.get_logger(__name__)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

DEFER_BYTES = 256 * 1024
"""Values larger than this are read from the spool only when used."""

AHEAD_BATCH = 50
"""Pending instances looked at per query when looking for one to analyse ahead."""

Analyze = Callable[[ImageInput, Sequence[str]], ImageResult]
"""Runs the routed engines (by name) on one image."""

Decode = Callable[[Dataset], ImageInput]
"""Turns a dataset into engine input; raises ``ValueError`` if undecodable."""


RESUME_MARGIN_BYTES = 64 * 1024 * 1024
"""Free disk above the floor at which jobs parked for lack of disk run again: room for a
study's results, so that a job does not fail again at once."""


def check_identity(ds: Dataset, path: Path) -> None:
    """Raise ``ValueError`` unless ``ds`` names the study, series and instance its spool
    path ``study/series/instance.dcm`` was made from at receipt: a file pydicom reads
    otherwise (an element it mis-reads and stops at, say) is not that instance."""
    read = [str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                          "SOPInstanceUID")]
    if read != [path.parent.parent.name, path.parent.name, path.stem]:
        raise ValueError("the file does not read back as the instance received")


@dataclass(frozen=True)
class BuildRequest:
    """What the result builders need for one job."""

    sources: Sequence[Dataset]
    result: StudyResult
    job_sequence: int
    pipeline: Pipeline
    overlay_capture: bool
    config: NodeConfig
    uid_seed: str
    """Seed of the result UIDs: a job re-run after a crash writes the same
    objects again, so the archive keeps one copy of each."""


Build = Callable[[BuildRequest], list[Dataset]]
"""Builds the result objects of a job."""


class JobError(RuntimeError):
    """A job cannot finish; the message is recorded as its reason."""


def not_assessed(ds: Dataset, reason: NotAssessedReasonValues, detail: str) -> ImageResult:
    """An image result saying ``ds`` was not analysed, and why."""
    uid = str(ds.SOPInstanceUID)
    return ImageResult(
        source_sop_instance_uid=uid,
        anatomy=AnatomyValues.OTHER,
        not_assessed=NotAssessed(uid, reason, detail),
    )


def _encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class Dispatcher:
    """Completes studies and runs jobs.

    Parameters
    ----------
    config:
        Returns the current configuration.
    index, spool, clock:
        The node's index, spool and clock.
    analyze, decode, build:
        The engines, the pixel decoder and the result builders, injected so
        that the network side never imports models.
    worker:
        This worker's name, recorded on the jobs it claims.
    """

    def __init__(
        self,
        config: Callable[[], NodeConfig],
        index: Index,
        spool: Spool,
        clock: Clock,
        analyze: Analyze,
        decode: Decode,
        build: Build,
        worker: str,
    ) -> None:
        self._config = config
        self.index = index
        self.spool = spool
        self.clock = clock
        self.analyze = analyze
        self.decode = decode
        self.build = build
        self.worker = worker
        self.ahead = AheadResults()
        self._jobs_may_wait_for_disk = True
        """Whether jobs may be parked for lack of disk (at start: from an earlier run)."""
        self._ahead_after = 0
        """Row id of the last pending instance considered for analysis ahead."""

    def complete_due_studies(self) -> list[int]:
        """Create jobs for every study complete now; returns the new job ids."""
        config = self._config()
        now = self.clock.now()
        jobs = []
        for state in self.index.pending_studies():
            pipeline = config.pipeline_for(state.called_ae)
            rule = pipeline.completion if pipeline is not None else Completion()
            reason = completion_reason(state, rule, now)
            if reason is None:
                continue
            job_id = self.index.create_job(state.study_id, reason.value, now)
            if job_id is not None:
                LOGGER.info(
                    "study_complete",
                    study_instance_uid=state.study_instance_uid,
                    called_ae=state.called_ae,
                    reason=reason.value,
                    job_id=job_id,
                )
                jobs.append(job_id)
        return jobs

    def run_next_job(self) -> bool:
        """Claim and run one queued job; ``False`` when the queue is empty."""
        job = self.index.claim_job(self.worker, self.clock.now())
        if job is None:
            return False
        log = LOGGER.bind(job_id=job.job_id, study_instance_uid=job.study_instance_uid)
        started = time.perf_counter()
        try:
            summary = self._process(job)
        except Exception as exc:
            self.ahead.discard(job.instance_paths)
            reason = str(exc) if isinstance(exc, JobError) else describe_error(exc, limit=4000)
            if isinstance(exc, SpoolError) and self._disk_full(exc):
                self._clear_results(job.job_id)
                self.index.wait_for_disk(job.job_id, f"results not written, disk full: {reason}")
                self._jobs_may_wait_for_disk = True
                metrics.JOBS.labels(JobState.WAITING_FOR_DISK.value).inc()
                log.warning("job_waits_for_disk", reason=reason, attempt=job.attempts)
                return True
            self.index.fail_job(job.job_id, reason, self.clock.now())
            metrics.JOBS.labels(JobState.FAILED.value).inc()
            log.error("job_failed", reason=reason, attempt=job.attempts)
            return True
        metrics.JOBS.labels(JobState.DONE.value).inc()
        log.info("job_done", seconds=round(time.perf_counter() - started, 3), **summary)
        return True

    def resume_jobs_waiting_for_disk(self) -> int:
        """Queue again the jobs parked for lack of disk once free disk is back above the
        floor (``limits.min_free_disk_mb``) by :data:`RESUME_MARGIN_BYTES`; returns how many."""
        if (not self._jobs_may_wait_for_disk
                or self.spool.free_bytes() < self._floor_bytes() + RESUME_MARGIN_BYTES):
            return 0
        self._jobs_may_wait_for_disk = False
        resumed = self.index.requeue_jobs_waiting_for_disk()
        if resumed:
            LOGGER.info("jobs_resumed_after_disk_full", jobs=resumed)
        return resumed

    def _clear_results(self, job_id: int) -> None:
        """Delete what a job wrote of its results (before it runs, and when it cannot finish)."""
        shutil.rmtree(self.spool.results / f"job-{job_id}", ignore_errors=True)

    def _floor_bytes(self) -> int:
        return self._config().limits.min_free_disk_mb * 1024 * 1024

    def _disk_full(self, exc: SpoolError) -> bool:
        """Whether a spool error came from a full disk (ENOSPC, or free disk under the floor)."""
        return exc.errno == errno.ENOSPC or self.spool.free_bytes() < self._floor_bytes()

    def analyse_ahead(self) -> bool:
        """Analyse one image whose study is still arriving; ``True`` if one was.

        The oldest pending ultrasound instance not yet considered is read,
        routed as its job will route it and analysed; the job then takes the
        result (:mod:`dicom_node.ahead`).  Nothing is done when
        ``analysis_ahead_mb`` is 0 or the results held fill it (after dropping
        those of instances no longer pending).  An instance that cannot be
        read, has no pipeline or no routed engine is skipped: its job reports
        it.  An engine failure is not kept, so that the job tries again.
        """
        config = self._config()
        budget = config.analysis_ahead_mb * 2**20
        if budget == 0:
            return False
        if self.ahead.bytes >= budget:
            self.ahead.keep_only(self.index.pending_paths(self.ahead.paths()))
            if self.ahead.bytes >= budget:
                return False
        for item in self.index.pending_instances(
            self._ahead_after, ULTRASOUND_SOP_CLASSES, AHEAD_BATCH
        ):
            self._ahead_after = item.instance_id
            pipeline = config.pipeline_for(item.called_ae)
            if pipeline is None:
                continue
            try:
                stamp = FileStamp.of(item.path)
                ds = dcmread(item.path, defer_size=DEFER_BYTES)
                check_identity(ds, Path(item.path))
            except Exception:
                continue
            engines = engines_for(pipeline, RoutingAttributes.from_dataset(ds, item.calling_ae))
            if not engines:
                continue
            result = self._analyse_image(ds, item.path, engines)
            failed = result.not_assessed is not None and (
                result.not_assessed.reason == NotAssessedReasonValues.ENGINE_ERROR
            )
            if not failed:
                self.ahead.put(item.path, engines, stamp, result)
                metrics.ANALYSED_AHEAD.inc()
            return True
        return False

    def _load(self, paths: Sequence[str]) -> tuple[list[tuple[str, Dataset]], int]:
        """Read the job's spooled files; one that cannot be read is skipped and logged.

        Large values (pixel data) are deferred: they stay on disk until a
        result builder needs them, so a study's cine loops are never all in
        memory at once.  Returns ``(path, dataset)`` pairs and how many files
        were skipped.
        """
        sources = []
        for path in paths:
            try:
                ds = dcmread(path, defer_size=DEFER_BYTES)
                check_identity(ds, Path(path))
                sources.append((path, ds))
            except Exception as exc:
                LOGGER.error(
                    "instance_unreadable",
                    file=Path(path).name,
                    error=describe_error(exc),
                )
        return sources, len(paths) - len(sources)

    def _analyse_image(self, ds: Dataset, path: str, engines: Sequence[str]) -> ImageResult:
        """Decode the image at ``path`` (a fresh read, freed afterwards) and analyse it."""
        if not engines:
            return not_assessed(
                ds,
                NotAssessedReasonValues.NO_ENGINE,
                "no routing rule sends this image to an engine",
            )
        try:
            image = self.decode(dcmread(path))
        except Exception as exc:
            return not_assessed(
                ds, NotAssessedReasonValues.UNDECODABLE, describe_error(exc)
            )
        started = time.perf_counter()
        try:
            result = self.analyze(image, engines)
        except Exception as exc:
            LOGGER.exception("engine_failed", sop_instance_uid=str(ds.SOPInstanceUID))
            return not_assessed(
                ds, NotAssessedReasonValues.ENGINE_ERROR, describe_error(exc)
            )
        engine = result.algorithm.name if result.algorithm is not None else "none"
        metrics.ENGINE_SECONDS.labels(engine).observe(time.perf_counter() - started)
        return result

    @staticmethod
    def _one_patient(
        images: list[tuple[str, Dataset]],
    ) -> tuple[list[tuple[str, Dataset]], int]:
        """The images of the study's patient, and how many others were left out.

        Result objects describe one patient, so an image whose patient attributes
        disagree with the others' (a mistaken merge of two patients under one Study
        Instance UID) is left out of the analysis and the results, and logged,
        instead of failing the whole job.  Names written differently ('DOE^JANE',
        'Doe^Jane^^^') and values one device leaves empty agree.
        """
        kept, others = one_patient([ds for _, ds in images])
        for index, keyword in others.items():
            LOGGER.warning("instance_of_another_patient", file=Path(images[index][0]).name,
                           differs=keyword)
        return [images[index] for index in kept], len(others)

    def _process(self, job: JobInput) -> dict[str, int | str]:
        config = self._config()
        pipeline = config.pipeline_for(job.called_ae)
        if pipeline is None:
            raise JobError(f"no pipeline for called AE {job.called_ae!r} any more")
        callers = dict(zip(job.instance_paths, job.callers, strict=True))
        self._clear_results(job.job_id)
        sources, unreadable = self._load(job.instance_paths)
        ultrasound = [
            (path, ds)
            for path, ds in sources
            if str(ds.get("SOPClassUID", "")) in ULTRASOUND_SOP_CLASSES
        ]
        ultrasound, other_patients = self._one_patient(ultrasound)
        # Results go back to the devices that sent the images they describe only (not
        # to one whose only image was another patient's).
        senders = list(dict.fromkeys(callers[path] for path, _ in ultrasound)) or list(
            dict.fromkeys(callers.values())) or [(job.calling_ae, job.calling_host)]
        targets = export_targets(config, pipeline, senders)
        images = [ds for _, ds in ultrasound]
        result = StudyResult(study_instance_uid=job.study_instance_uid)
        ahead = 0
        for path, ds in ultrasound:
            attrs = RoutingAttributes.from_dataset(ds, callers[path][0])
            engines = engines_for(pipeline, attrs)
            image = self.ahead.take(path, engines)
            if image is None:
                image = self._analyse_image(ds, path, engines)
            else:
                ahead += 1
            result.images.append(image)
        self.ahead.discard(job.instance_paths)
        result.number_findings()
        failures = [
            n.detail
            for n in result.not_assessed
            if n.reason == NotAssessedReasonValues.ENGINE_ERROR
        ]
        analysed = [i for i in result.images if i.not_assessed is None]
        if failures and not analysed:
            raise JobError(f"engine failed on {len(failures)} image(s): {failures[0]}")
        objects: list[Dataset] = []
        if images:
            objects = self.build(
                BuildRequest(
                    sources=images,
                    result=result,
                    job_sequence=job.sequence,
                    pipeline=pipeline,
                    overlay_capture=any(t.include_overlay for t in targets),
                    config=config,
                    uid_seed=(f"{job.study_instance_uid}|{job.called_ae}|job-{job.job_id}"
                              f"|{job.created_at.isoformat() if job.created_at else ''}"),
                )
            )
        written = [
            (
                str(obj.SOPInstanceUID),
                str(obj.SOPClassUID),
                str(self.spool.write_result(job.job_id, str(obj.SOPInstanceUID), _encode(obj))),
                str(obj.SOPClassUID) == SECONDARY_CAPTURE,
            )
            for obj in objects
        ]
        summary: dict[str, int | str] = {
            "images": len(images),
            "analysed_ahead": ahead,
            "other_instances": len(sources) - len(images),
            "unreadable": unreadable,
            "other_patient": other_patients,
            "lesions": len(result.lesions),
            "cardiac": len(result.cardiac),
            "not_assessed": len(result.not_assessed),
            "engine_errors": len(failures),
            "objects": len(written),
            "destinations": len(targets),
        }
        self.index.finish_job(
            job.job_id,
            written,
            targets,
            ", ".join(f"{k}={v}" for k, v in summary.items()),
            self.clock.now(),
        )
        return summary
