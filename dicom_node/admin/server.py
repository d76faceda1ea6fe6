"""Runs the admin API with uvicorn in a background thread of the node."""

from __future__ import annotations

import socket
import threading
import time

import structlog
import uvicorn
from fastapi import FastAPI

LOGGER = structlog.get_logger(__name__)

START_TIMEOUT = 30.0
"""Seconds to wait for uvicorn to start serving."""


class ApiServer:
    """uvicorn serving ``app`` on ``host:port`` in a daemon thread.

    Parameters
    ----------
    app:
        The ASGI application.
    host, port:
        Where to listen; the socket is bound in :meth:`start`, so a port in use
        fails there and not in the thread.
    """

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        )
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind, start serving, and return the port.

        Raises
        ------
        OSError
            If the address cannot be bound or the server does not start.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"admin API cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from exc
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="admin-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"admin API did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        LOGGER.info("admin_api_started", host=self.host, port=self.port)
        return self.port

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
