"""A minimal pynetdicom Storage SCP: the floor of any receiver built on pynetdicom.

It writes each received instance as it came (file meta + dataset bytes) to
``<folder>/<SOP Instance UID>.dcm``, fsyncs the file (not the directory, no
index) and answers Success.  TCP_NODELAY is set on accepted sockets, as in the
node.  Used by ``benchmarks.ingest --peers ...,pynetdicom``.

Run::

    python -m benchmarks.minimal_scp PORT FOLDER
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.network import ACCEPTED_ONLY_SOP_CLASSES, TRANSFER_SYNTAXES, ULTRASOUND_SOP_CLASSES


class NoDelayServer(ThreadedAssociationServer):
    """Association server that sets TCP_NODELAY on accepted sockets."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection and disable Nagle's algorithm on it."""
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


def handle_store(event: Event, folder: Path) -> int:
    """Write the instance, fsync it and answer Success."""
    path = folder / f"{event.request.AffectedSOPInstanceUID}.dcm"
    with open(path, "wb") as handle:
        handle.write(event.encoded_dataset(include_meta=True))
        handle.flush()
        os.fsync(handle.fileno())
    return 0x0000


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    ae = AE(ae_title="MINIMAL")
    ae.maximum_pdu_size = 262144
    ae.maximum_associations = 16
    ae.add_supported_context(Verification)
    for uid in (*sorted(ULTRASOUND_SOP_CLASSES), *ACCEPTED_ONLY_SOP_CLASSES):
        ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
    handlers = [(evt.EVT_C_STORE, handle_store, [args.folder])]
    server = ae.make_server(
        ("127.0.0.1", args.port),
        evt_handlers=handlers,
        server_class=NoDelayServer,
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
