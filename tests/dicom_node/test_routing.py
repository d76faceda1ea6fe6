"""Routing rules: which engines an image goes to, where results go."""

from __future__ import annotations

import pytest

from dicom_node.config import Caller, Destination, NodeConfig, Pipeline, Rule
from dicom_node.routing import RoutingAttributes, RoutingError, engines_for, export_targets

US = "1.2.840.10008.5.1.4.1.1.6.1"
US_MF = "1.2.840.10008.5.1.4.1.1.3.1"


def attrs(**kwargs: object) -> RoutingAttributes:
    values: dict[str, object] = {
        "sop_class_uid": US,
        "modality": "US",
        "body_part": None,
        "study_description": None,
        "calling_ae": "US_ROOM",
    }
    values.update(kwargs)
    return RoutingAttributes(**values)  # type: ignore[arg-type]


PIPELINE = Pipeline(
    called_ae="NODE",
    rules=[
        Rule(name="liver", match={"body_part": ["LIVER", "ABDOMEN"]}, engines=["liver"]),
        Rule(name="breast", match={"body_part": ["BREAST"]}, engines=["breast"]),
        Rule(
            name="echo",
            match={"study_description": r"echo|cardiac", "sop_class": [US_MF]},
            engines=["cardiac"],
        ),
        Rule(name="from-pacs", match={"calling_ae": ["PACS"]}, engines=["liver", "breast"]),
        Rule(name="other-us", match={"modality": ["US"]}, engines=["liver", "breast", "cardiac"]),
    ],
)


def test_body_part_routes_case_insensitively() -> None:
    assert engines_for(PIPELINE, attrs(body_part="abdomen")) == ("liver",)
    assert engines_for(PIPELINE, attrs(body_part="BREAST")) == ("breast",)


def test_study_description_regex_and_sop_class_must_both_hold() -> None:
    echo = attrs(study_description="TTE Echo rest", sop_class_uid=US_MF)
    assert engines_for(PIPELINE, echo) == ("cardiac",)
    still = attrs(study_description="TTE Echo rest", sop_class_uid=US)
    assert engines_for(PIPELINE, still) == ("liver", "breast", "cardiac")


def test_calling_ae_rule() -> None:
    assert engines_for(PIPELINE, attrs(calling_ae="PACS")) == ("liver", "breast")


def test_first_matching_rule_wins() -> None:
    both = attrs(body_part="LIVER", calling_ae="PACS")
    assert engines_for(PIPELINE, both) == ("liver",)


def test_no_rule_matches() -> None:
    assert engines_for(PIPELINE, attrs(modality="CT")) == ()
    assert engines_for(PIPELINE, attrs(modality=None)) == ()


def test_export_targets_with_return_to_sender() -> None:
    config = NodeConfig(
        destinations=[
            Destination(name="pacs", ae_title="PACS", host="10.0.0.1", port=104),
            Destination(
                name="viewer", ae_title="VIEWER", host="10.0.0.2", port=11112, overlay_capture=True
            ),
        ],
        pipelines=[
            Pipeline(
                called_ae="NODE",
                allowed_callers=[Caller(ae_title="US_ROOM", port=4100)],
                destinations=["pacs", "viewer", "return-to-sender"],
            )
        ],
    )
    pipeline = config.pipelines[0]
    targets = export_targets(config, pipeline, [("US_ROOM", "10.9.9.9")])
    assert [(t.destination, t.ae_title, t.host, t.port, t.include_overlay) for t in targets] == [
        ("pacs", "PACS", "10.0.0.1", 104, False),
        ("viewer", "VIEWER", "10.0.0.2", 11112, True),
        ("return-to-sender:US_ROOM", "US_ROOM", "10.9.9.9", 4100, False),
    ]


def test_return_to_sender_without_a_known_port_is_an_error() -> None:
    config = NodeConfig(pipelines=[Pipeline(called_ae="NODE", destinations=["return-to-sender"])])
    with pytest.raises(RoutingError, match=r"no port configured for calling AE US_ROOM$"):
        export_targets(config, config.pipelines[0], [("US_ROOM", "10.9.9.9")])


def test_return_to_sender_goes_to_every_sender_with_a_port_and_skips_the_others() -> None:
    config = NodeConfig(
        destinations=[Destination(name="pacs", ae_title="PACS", host="10.0.0.1", port=104)],
        pipelines=[
            Pipeline(
                called_ae="NODE",
                allowed_callers=[
                    Caller(ae_title="ECHO_ROOM", port=4100),
                    Caller(ae_title="ABD_ROOM", host="10.0.0.7", port=4101),
                    Caller(ae_title="PACS"),
                ],
                destinations=["pacs", "return-to-sender"],
            )
        ],
    )
    senders = [("ECHO_ROOM", "10.0.0.5"), ("PACS", "10.0.0.1"), ("ABD_ROOM", "10.0.0.7"),
               ("ECHO_ROOM", "10.0.0.5")]
    targets = export_targets(config, config.pipelines[0], senders)
    assert [(t.destination, t.host, t.port) for t in targets] == [
        ("pacs", "10.0.0.1", 104),
        ("return-to-sender:ECHO_ROOM", "10.0.0.5", 4100),
        ("return-to-sender:ABD_ROOM", "10.0.0.7", 4101),
    ]


@pytest.mark.parametrize(
    ("description", "engines"),
    [
        ("Echocardiogram TTE", ("cardiac",)),
        ("TTE", ("cardiac",)),
        ("ECHOGRAPHIE ABDOMINALE", ("liver", "breast", "cardiac")),
        ("US breast - echogenic mass f/u", ("liver", "breast", "cardiac")),
        ("Echo lever", ("liver", "breast", "cardiac")),
    ],
)
def test_the_example_echo_rule_takes_echocardiograms_only(
    description: str, engines: tuple[str, ...]
) -> None:
    from pathlib import Path

    from dicom_node.config import load_config

    example = Path(__file__).resolve().parents[2] / "config" / "example.yaml"
    pipeline = load_config(example).pipelines[0]
    routed = engines_for(pipeline, attrs(modality="US", study_description=description))
    assert routed == engines


def test_return_to_sender_finds_a_caller_however_its_address_is_written() -> None:
    config = NodeConfig(pipelines=[Pipeline(
        called_ae="NODE", destinations=["return-to-sender"],
        allowed_callers=[Caller(ae_title="US_ROOM", host="10.0.0.7", port=104)])])
    (target,) = export_targets(config, config.pipelines[0], [("US_ROOM", "::ffff:10.0.0.7")])
    assert (target.ae_title, target.port) == ("US_ROOM", 104)
