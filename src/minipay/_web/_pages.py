"""What the web pages answer with: the shared stylesheet, and the headers of a page nothing may frame."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, Response

__all__ = ["PAGE_HEADERS", "STYLESHEET", "stylesheet"]

#: The one stylesheet of the console, the simulator and the sandbox's pages.
STYLESHEET = Path(__file__).parent / "minipay.css"

#: A page that is never cached, never framed, and loads only its own assets (the sandbox dashboard,
#: the console). The pay sheet and /try frame each other, so they set their own.
PAGE_HEADERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; form-action 'self'"
        ),
    }
)


async def stylesheet(request: Request) -> Response:
    """The endpoint that serves ``minipay.css`` (a Starlette or FastAPI route)."""
    return FileResponse(STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=300"})
