"""GET /: the one-page chat (rag/server/static/index.html), under a policy that lets it talk to this server only."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

# The page may talk to this server only: no outside scripts, styles, fonts or connections.
PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@router.get("/", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    # The page holds no data (it asks for the key when the API answers 401), so it is served without one.
    html = resources.files("rag.server").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})
