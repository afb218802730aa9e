"""The web playground (GET /playground): one static page that signs requests in the browser.

No build step and nothing from other origins, so the page is served with a self-only
Content-Security-Policy: its script and style are sibling files, not inline. The sampler
list comes from openpik.samplers, the table the gateway checks names with, so the page can
never offer a name the workers refuse.
"""

from __future__ import annotations

from functools import cache
from html import escape
from pathlib import Path

from fastapi.responses import JSONResponse, Response

from openpik.samplers import SAMPLERS

HERE = Path(__file__).parent
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# form-action 'none': no form can navigate, so the keys never end up in a URL even if the
# script fails to load; frame-ancestors 'none': no other site can frame the page to phish keys.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def page_response() -> Response:
    return Response(_page(), media_type="text/html; charset=utf-8", headers=HEADERS)


def asset_response(name: str) -> Response:
    """One of the page's sibling files by its name in ASSETS (never a path on disk), else 404."""
    if name not in ASSETS:
        return JSONResponse({"detail": "not found"}, status_code=404, headers=HEADERS)
    return Response(_read(name), media_type=ASSETS[name], headers=HEADERS)


@cache
def _page() -> bytes:
    options = "".join(f"<option>{escape(name)}</option>" for name in SAMPLERS)
    return _read("index.html").replace(b"{{SAMPLER_OPTIONS}}", options.encode())


@cache
def _read(name: str) -> bytes:
    return (HERE / name).read_bytes()
