"""Spool parts: written as the data arrives, durable only once committed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicom_node import spool as spool_module
from dicom_node.spool import WRITEBACK_BYTES, Spool, SpoolError, SpoolInUse

UID = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def _target(spool: Spool, sop: str = UID) -> Path:
    return spool.path_for(UID, UID, sop)


def test_a_part_written_in_pieces_is_committed_whole(spool: Spool) -> None:
    part = spool.begin(b"header|")
    for piece in (b"one|", memoryview(b"xtwo|")[1:], b"three"):
        part.append(piece)
    assert part.path.parent == spool.tmp and part.path.exists()
    with part.data() as data:
        assert bytes(data) == b"one|two|three"  # mapped from the file, after the header
        kept = data
    with pytest.raises(ValueError, match="released"):
        bytes(kept)
    spooled = spool.commit(part, _target(spool))
    assert spooled.created and spooled.size == len(b"header|one|two|three")
    assert _target(spool).read_bytes() == b"header|one|two|three"
    assert not list(spool.tmp.iterdir())
    part.discard()  # after commit: nothing to delete
    assert _target(spool).exists()


def test_of_two_commits_racing_for_one_instance_the_first_file_stays(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = spool.begin(b"first"), spool.begin(b"second")
    target = _target(spool)
    assert spool.commit(first, target).created
    # The second association looked before the first committed, and found nothing.
    exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: self != target and exists(self))
    spooled = spool.commit(second, target)
    monkeypatch.undo()
    assert not spooled.created and spooled.size == len(b"first")
    assert _target(spool).read_bytes() == b"first"
    assert not list(spool.tmp.iterdir())


def test_a_part_for_an_existing_instance_is_dropped(spool: Spool) -> None:
    spool.write(_target(spool), b"first")
    spooled = spool.commit(spool.begin(b"second"), _target(spool))
    assert not spooled.created and spooled.size == len(b"first")
    assert _target(spool).read_bytes() == b"first"
    assert not list(spool.tmp.iterdir())


def test_a_discarded_part_leaves_nothing_and_cannot_be_committed(spool: Spool) -> None:
    part = spool.begin(b"header")
    part.discard()
    part.append(b"late data")  # an arrival after the association ended
    assert not list(spool.tmp.iterdir())
    with pytest.raises(SpoolError):
        spool.commit(part, _target(spool))
    assert not _target(spool).exists()
    assert not list(spool.tmp.iterdir())


def test_write_back_starts_every_writeback_bytes(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[int, int]] = []
    real = spool_module._start_writeback

    def record(fd: int, offset: int, count: int) -> None:
        started.append((offset, count))
        real(fd, offset, count)  # the system call itself must work here

    monkeypatch.setattr(spool_module, "_start_writeback", record)
    piece = bytes(100_000)
    part = spool.begin(b"", writeback=True)
    for _ in range(9):
        part.append(piece)
    spool.commit(part, _target(spool))
    assert started == [(0, 300_000), (300_000, 300_000), (600_000, 300_000)]
    assert all(count >= WRITEBACK_BYTES for _, count in started)
    assert _target(spool).stat().st_size == 900_000

    started.clear()  # data written at once is left to the fsync
    spool.write(spool.path_for(UID, UID, UID + ".2"), bytes(900_000))
    assert started == []


def test_a_part_whose_write_failed_says_so(spool: Spool) -> None:
    part = spool.begin(b"header")
    part.error = OSError(28, "No space left on device")  # as a failed write leaves it
    with pytest.raises(OSError, match="No space"), part.data():
        pass
    with pytest.raises(SpoolError) as raised:
        spool.commit(part, _target(spool))
    assert raised.value.errno == 28
    assert not _target(spool).exists() and not list(spool.tmp.iterdir())


def test_the_node_identity_stays_with_its_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path / "a").identity()
    assert Spool(tmp_path / "a").identity() == first, "a restart on the same spool"
    assert Spool(tmp_path / "b").identity() != first, "another node's spool"
    assert (tmp_path / "a" / spool_module.IDENTITY_FILE).read_text() == first
    assert not list((tmp_path / "a" / "tmp").iterdir())


def test_an_instance_sent_again_in_another_series_of_its_study_is_kept_once(
        spool: Spool) -> None:
    first = spool.commit(spool.begin(b"first"), spool.path_for("1.2", "1.2.1", "1.2.1.1"))
    again = spool.commit(spool.begin(b"again"), spool.path_for("1.2", "1.2.2", "1.2.1.1"))
    assert first.created and not again.created
    assert again.path == first.path and first.path.read_bytes() == b"first"
    other_study = spool.commit(spool.begin(b"x"), spool.path_for("1.3", "1.3.1", "1.2.1.1"))
    assert other_study.created  # the index keeps one instance per UID in a study
    assert len(spool.instance_files()) == 2


def test_patient_data_is_for_the_nodes_user_only(spool: Spool) -> None:
    spool.commit(spool.begin(b"data"), _target(spool))
    spool.identity()
    folders = [spool.root, spool.studies, spool.tmp, spool.results, _target(spool).parent,
               _target(spool).parent.parent]
    assert {oct(f.stat().st_mode & 0o777) for f in folders} == {"0o700"}
    files = [_target(spool), spool.root / spool_module.IDENTITY_FILE]
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}


def test_one_process_holds_a_spool(tmp_path: Path) -> None:
    first, second = Spool(tmp_path / "spool"), Spool(tmp_path / "spool")
    first.lock()
    held = f"in use by another dicom-node process \\(pid {os.getpid()}\\)"
    with pytest.raises(SpoolInUse, match=held):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()
    second.unlock()  # nothing held: nothing to do
