"""Analysis ahead of completion: images analysed while their study is still arriving."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from pydicom import dcmread

from dicom_node.ahead import RESULT_OVERHEAD_BYTES, AheadResults, FileStamp, result_bytes
from dicom_node.index import IndexQueries, JobState
from dicom_node.network import ULTRASOUND_SOP_CLASSES
from inference.engines.base import ImageInput
from inference.findings import (
    AnatomyValues,
    BoundingBox,
    ImageResult,
    LesionFinding,
    LesionObservation,
)
from tests.dicom_node.conftest import ARCHIVE, NodeHarness, make_study, pipeline
from tests.dicom_node.fake_engine import FakeAnalyzer

MakeNode = Callable[..., NodeHarness]

BREAST_ONLY = [{"name": "breast", "match": {"body_part": ["BREAST"]}, "engines": ["breast"]}]


class HeatmapAnalyzer(FakeAnalyzer):
    """The fake engine, with a full-size Grad-CAM map on every finding."""

    def __call__(self, image: ImageInput, engines: Sequence[str]) -> ImageResult:
        result = super().__call__(image, engines)
        rows, columns = image.frames.shape[1:3]
        for lesion in result.lesions:
            lesion.heatmap = np.zeros((rows, columns), np.float32)
        return result


def analyse_all_ahead(harness: NodeHarness) -> int:
    """Analyse ahead until the dispatcher finds nothing more; returns how many steps worked."""
    steps = 0
    while harness.node.dispatcher.analyse_ahead():
        steps += 1
    return steps


def only_job(harness: NodeHarness) -> dict[str, object]:
    jobs = IndexQueries(harness.node.index).jobs()
    assert len(jobs) == 1
    assert jobs[0]["state"] == JobState.DONE.value, jobs[0]["error"]
    return jobs[0]


def test_images_analysed_ahead_are_not_analysed_again(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    study = make_study(3)
    harness.store(study)
    assert analyse_all_ahead(harness) == 3
    assert len(harness.node.dispatcher.ahead) == 3
    assert harness.settle() != []
    assert [call[0] for call in harness.analyzer.calls] == [ds.SOPInstanceUID for ds in study]
    assert "analysed_ahead=3" in str(only_job(harness)["summary"])
    assert len(harness.node.dispatcher.ahead) == 0
    assert harness.node.dispatcher.ahead.bytes == 0
    reports = [dcmread(p) for p in harness.node.spool.results.glob("job-*/*.dcm")]
    assert "SR" in {ds.Modality for ds in reports}


def test_a_late_image_is_analysed_by_the_job(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    early, late = make_study(2)
    harness.store([early])
    assert analyse_all_ahead(harness) == 1
    harness.store([late])
    harness.settle()
    assert [call[0] for call in harness.analyzer.calls] == [
        early.SOPInstanceUID,
        late.SOPInstanceUID,
    ]
    assert "analysed_ahead=1" in str(only_job(harness)["summary"])


def test_jobs_come_before_analysis_ahead(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    first, second = make_study(1), make_study(1)
    harness.store(first)
    harness.clock.advance(31)
    harness.store(second)
    assert harness.node.dispatch_step()
    assert [call[0] for call in harness.analyzer.calls] == [first[0].SOPInstanceUID]
    assert "analysed_ahead=0" in str(only_job(harness)["summary"])
    assert harness.node.dispatch_step()
    assert [call[0] for call in harness.analyzer.calls][1:] == [second[0].SOPInstanceUID]
    assert len(harness.node.dispatcher.ahead) == 1
    assert not harness.node.dispatch_step()


def test_a_result_is_not_used_after_the_routing_changed(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store(make_study(1, body_part="BREAST"))
    assert analyse_all_ahead(harness) == 1
    config = harness.node.config()
    changed = config.model_copy(update={"pipelines": [pipeline(rules=BREAST_ONLY)]})
    harness.node.reconfigure(changed)
    harness.settle()
    engines = [call[1] for call in harness.analyzer.calls]
    assert engines == [("liver", "breast", "cardiac"), ("breast",)]
    assert "analysed_ahead=0" in str(only_job(harness)["summary"])


def test_a_result_is_not_used_after_the_file_changed(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store(make_study(1))
    assert analyse_all_ahead(harness) == 1
    (path,) = harness.node.dispatcher.ahead.paths()
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    harness.settle()
    assert len(harness.analyzer.calls) == 2
    assert "analysed_ahead=0" in str(only_job(harness)["summary"])


def test_unrouted_images_are_not_analysed_ahead(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(rules=BREAST_ONLY), destinations=[ARCHIVE])
    harness.store(make_study(2, body_part="ABDOMEN"))
    assert analyse_all_ahead(harness) == 0
    assert harness.analyzer.calls == []


def test_no_analysis_ahead_when_its_memory_is_zero(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE], analysis_ahead_mb=0)
    harness.store(make_study(2))
    assert analyse_all_ahead(harness) == 0
    harness.settle()
    assert len(harness.analyzer.calls) == 2


def test_analysis_ahead_stops_when_its_memory_is_full(make_node: MakeNode) -> None:
    harness = make_node(
        analyzer=HeatmapAnalyzer(),
        pipeline=pipeline(),
        destinations=[ARCHIVE],
        analysis_ahead_mb=1,
    )
    harness.store(make_study(3, rows=480, columns=640))
    assert analyse_all_ahead(harness) == 1, "one 640x480 float32 map (1.2 MB) fills 1 MiB"
    assert harness.node.dispatcher.ahead.bytes > 2**20
    harness.settle()
    assert len(harness.analyzer.calls) == 3
    assert "analysed_ahead=1" in str(only_job(harness)["summary"])
    assert harness.node.dispatcher.ahead.bytes == 0


def test_results_of_instances_no_longer_pending_are_dropped_when_full(
    make_node: MakeNode,
) -> None:
    harness = make_node(
        analyzer=HeatmapAnalyzer(),
        pipeline=pipeline(),
        destinations=[ARCHIVE],
        analysis_ahead_mb=1,
    )
    first, second = make_study(1, rows=480, columns=640), make_study(1, rows=480, columns=640)
    harness.store(first)
    harness.store(second)
    assert analyse_all_ahead(harness) == 1
    studies = IndexQueries(harness.node.index).studies()
    (study,) = [s for s in studies if s["study_instance_uid"] == first[0].StudyInstanceUID]
    assert harness.node.index.create_job(study["id"], "elsewhere", harness.clock.now())
    assert analyse_all_ahead(harness) == 1
    assert [call[0] for call in harness.analyzer.calls] == [
        first[0].SOPInstanceUID,
        second[0].SOPInstanceUID,
    ]
    (path,) = harness.node.dispatcher.ahead.paths()
    assert harness.node.index.pending_paths([path]) == {path}


def test_an_engine_failure_ahead_is_tried_again_by_the_job(make_node: MakeNode) -> None:
    study = make_study(1)
    analyzer = FakeAnalyzer(fail_on={study[0].SOPInstanceUID})
    harness = make_node(analyzer=analyzer, pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store(study)
    assert analyse_all_ahead(harness) == 1
    assert len(harness.node.dispatcher.ahead) == 0
    harness.settle()
    assert len(analyzer.calls) == 2


def test_pending_instances_in_arrival_order_after_a_row(make_node: MakeNode) -> None:
    harness = make_node(pipeline=pipeline(), destinations=[ARCHIVE])
    harness.store(make_study(3))
    index = harness.node.index
    everything = index.pending_instances(0, ULTRASOUND_SOP_CLASSES, 10)
    assert len(everything) == 3
    ids = [item.instance_id for item in everything]
    assert ids == sorted(ids)
    assert {item.called_ae for item in everything} == {"NODE"}
    assert {item.calling_ae for item in everything} == {"MODALITY"}
    assert index.pending_instances(ids[0], ULTRASOUND_SOP_CLASSES, 10) == everything[1:]
    assert index.pending_instances(0, ULTRASOUND_SOP_CLASSES, 1) == everything[:1]
    assert index.pending_instances(0, {"1.2.840.10008.5.1.4.1.1.2"}, 10) == []
    paths = [item.path for item in everything]
    assert index.pending_paths([*paths, "/no/such/file"]) == set(paths)
    harness.settle()
    assert index.pending_instances(0, ULTRASOUND_SOP_CLASSES, 10) == []
    assert index.pending_paths(paths) == set()


def test_results_are_counted_by_their_arrays() -> None:
    result = ImageResult(source_sop_instance_uid="1.2.3", anatomy=AnatomyValues.LIVER)
    assert result_bytes(result) == RESULT_OVERHEAD_BYTES
    lesion = LesionFinding(
        tracking_id="Lesion 1",
        tracking_uid="1.2.3.4",
        anatomy=AnatomyValues.LIVER,
        label="cyst",
        probabilities={"cyst": 1.0},
        malignancy_probability=0.0,
        source_sop_instance_uid="1.2.3",
        observations=[LesionObservation(1, BoundingBox(2, 2, 8, 6), 0.9)],
        mask=np.zeros((10, 20), bool),
        heatmap=np.zeros((10, 20), np.float32),
    )
    result.lesions.append(lesion)
    assert result_bytes(result) == 200 + 800 + 2 * RESULT_OVERHEAD_BYTES


def test_taking_a_result_checks_engines_and_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "image.dcm")
    with open(path, "wb") as handle:
        handle.write(b"first")
    results = AheadResults()
    result = ImageResult(source_sop_instance_uid="1.2.3", anatomy=AnatomyValues.LIVER)
    results.put(path, ["liver"], FileStamp.of(path), result)
    assert results.bytes == RESULT_OVERHEAD_BYTES
    assert results.take(path, ["breast"]) is None
    assert results.bytes == 0, "a result that does not apply is dropped"
    results.put(path, ["liver"], FileStamp.of(path), result)
    assert results.take(path, ["liver"]) is result
    results.put(path, ["liver"], FileStamp.of(path), result)
    with open(path, "ab") as handle:
        handle.write(b" and more")
    assert results.take(path, ["liver"]) is None
    results.put(path, ["liver"], FileStamp.of(path), result)
    os.remove(path)
    assert results.take(path, ["liver"]) is None
    assert results.keep_only([]) == 0
    assert len(results) == 0
