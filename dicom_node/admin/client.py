"""A small client of the admin REST API, used by the CLI against a running node."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TOKEN_ENV = "DICOM_NODE_ADMIN_TOKEN"
"""Environment variable holding the admin token; it wins over ``admin_token``."""


class ApiError(RuntimeError):
    """The API answered with an error status, or could not be reached.

    Attributes
    ----------
    status:
        The HTTP status, or ``None`` when the API could not be reached.
    """

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


def _detail(body: bytes) -> str:
    """The human message of a FastAPI error body."""
    try:
        detail = json.loads(body).get("detail", body.decode(errors="replace"))
    except (ValueError, AttributeError):
        return body.decode(errors="replace")
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
            for item in detail
        )
    return str(detail)


class AdminClient:
    """Calls the admin API of a running node.

    Parameters
    ----------
    url:
        Base URL, e.g. ``http://127.0.0.1:8080``.
    token:
        Bearer token for state-changing calls.
    timeout:
        Seconds per request (a C-ECHO can take up to the node's ACSE timeout).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send a request and return the decoded JSON answer.

        Raises
        ------
        ApiError
            On an HTTP error status (with the API's message) or no connection.
        """
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(_detail(exc.read()), exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(f"cannot reach the admin API at {self.url}: {exc}", None) from exc

    @staticmethod
    def quote(segment: str) -> str:
        """``segment`` escaped for a URL path (AE titles may contain spaces)."""
        return urllib.parse.quote(segment, safe="")
