"""The dashboard: a dependency-free page served by the gateway, backed by the admin API.

The page holds no data of its own; its script asks for an admin token and
keeps it in the tab's session storage. A strict Content-Security-Policy
allows scripts, styles and requests from this origin only.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter()

_FILES = {
    "dashboard.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _static(name: str) -> Response:
    content = resources.files("gateway").joinpath("static", name).read_bytes()
    return Response(content, media_type=_FILES[name], headers=_HEADERS)


@router.get("/dashboard", include_in_schema=False)
async def page() -> Response:
    return _static("dashboard.html")


@router.get("/dashboard/app.js", include_in_schema=False)
async def script() -> Response:
    return _static("app.js")


@router.get("/dashboard/style.css", include_in_schema=False)
async def style() -> Response:
    return _static("style.css")
