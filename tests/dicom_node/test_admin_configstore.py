"""ConfigStore: a change is saved atomically before the node uses it, or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicom_node.admin.configstore import ConfigStore, NotFound, write_atomically
from dicom_node.config import ConfigError, Destination, NodeConfig, Pipeline, load_config


class Holder:
    """Stands in for the node: holds the current configuration."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.applied: list[NodeConfig] = []

    def apply(self, config: NodeConfig) -> None:
        self.config = config
        self.applied.append(config)


@pytest.fixture
def holder() -> Holder:
    return Holder(NodeConfig(pipelines=[Pipeline(called_ae="FIRST")]))


@pytest.fixture
def store(holder: Holder, tmp_path: Path) -> ConfigStore:
    return ConfigStore(tmp_path / "node.yaml", lambda: holder.config, holder.apply)


def test_saved_file_loads_back_to_the_applied_configuration(
    store: ConfigStore, holder: Holder
) -> None:
    store.add_destination(Destination(name="pacs", ae_title="PACS", host="10.0.0.9", port=104))
    pipeline = Pipeline.model_validate(
        {
            "called_ae": "US_AI",
            "allowed_callers": [{"ae_title": "ROOM", "host": "10.0.0.2", "port": 104}],
            "completion": {"quiet_seconds": 12, "expected_series": 2},
            "rules": [{"name": "liver", "match": {"modality": ["US"]}, "engines": ["liver"]}],
            "destinations": ["pacs", "return-to-sender"],
        }
    )
    store.add_pipeline(pipeline)
    saved = load_config(store.path)
    assert saved.pipelines == holder.config.pipelines
    assert saved.destinations == holder.config.destinations
    assert len(holder.applied) == 2


def test_failed_write_keeps_the_old_file_and_the_running_config(
    store: ConfigStore, holder: Holder, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add_pipeline(Pipeline(called_ae="SECOND"))
    before = store.path.read_bytes()

    def disk_full(_src: str, _dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        store.add_pipeline(Pipeline(called_ae="THIRD"))
    assert store.path.read_bytes() == before
    assert holder.config.pipeline_for("THIRD") is None
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["node.yaml", "node.yaml.bak"]


def test_invalid_change_is_neither_saved_nor_applied(store: ConfigStore, holder: Holder) -> None:
    with pytest.raises(ConfigError, match="unknown destination 'nowhere'"):
        store.add_pipeline(Pipeline(called_ae="X", destinations=["nowhere"]))
    with pytest.raises(ConfigError, match="already has a pipeline"):
        store.add_pipeline(Pipeline(called_ae="FIRST"))
    with pytest.raises(NotFound, match="no pipeline 'GONE'"):
        store.remove_pipeline("GONE")
    with pytest.raises(NotFound, match="no destination 'gone'"):
        store.remove_destination("gone")
    assert not store.path.exists()
    assert holder.applied == []


def test_rename_through_update(store: ConfigStore, holder: Holder) -> None:
    store.update_pipeline("FIRST", Pipeline(called_ae="RENAMED"))
    assert [p.called_ae for p in holder.config.pipelines] == ["RENAMED"]
    with pytest.raises(NotFound):
        store.pipeline("FIRST")


def test_unreadable_existing_file_is_refused(store: ConfigStore, holder: Holder) -> None:
    store.path.write_text("- a list, not a mapping\n")
    store = ConfigStore(store.path, lambda: holder.config, holder.apply)
    with pytest.raises(ConfigError, match="must be a mapping"):
        store.add_pipeline(Pipeline(called_ae="X"))
    assert holder.applied == []


def test_a_file_changed_since_it_was_read_is_not_overwritten(
    store: ConfigStore, holder: Holder
) -> None:
    store.add_pipeline(Pipeline(called_ae="SECOND"))
    edited = store.path.read_text() + "manufacturer: Edited by hand\n"
    store.path.write_text(edited)
    with pytest.raises(ConfigError, match="was changed since the node read it"):
        store.add_pipeline(Pipeline(called_ae="THIRD"))
    assert store.path.read_text() == edited
    assert [p.called_ae for p in holder.config.pipelines] == ["FIRST", "SECOND"]


def test_a_destination_gets_a_new_address_and_keeps_its_tls(
    store: ConfigStore, holder: Holder, tmp_path: Path
) -> None:
    tls = {"certificate": tmp_path / "c.pem", "private_key": tmp_path / "k.pem"}
    store.add_destination(Destination.model_validate(
        {"name": "pacs", "ae_title": "PACS", "host": "10.0.0.9", "port": 104, "tls": tls}))
    store.update_destination(Destination(name="pacs", ae_title="PACS2", host="10.0.1.9",
                                         port=11112))
    (pacs,) = load_config(store.path).destinations
    assert (pacs.ae_title, pacs.host, pacs.port) == ("PACS2", "10.0.1.9", 11112)
    assert pacs.tls is not None and pacs.tls.certificate == tmp_path / "c.pem"
    with pytest.raises(NotFound):
        store.update_destination(Destination(name="nope", ae_title="X", host="h", port=1))


def test_write_atomically_creates_folders_and_backs_up(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.yaml"
    write_atomically(path, "one: 1\n")
    write_atomically(path, "two: 2\n")
    assert path.read_text() == "two: 2\n"
    assert (tmp_path / "a" / "b.yaml.bak").read_text() == "one: 1\n"
