"""The viewer page at `/`, its static files, a film preview, and /docs + /redoc served offline.

Everything the page needs ships in `service/static/` (package data): the viewer's HTML/CSS/JS and the
vendored Swagger UI and ReDoc bundles (`service/static/vendor/README.md`), so nothing comes from a CDN.
The app is created with `docs_url=None, redoc_url=None`; the routes here take their place.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from PIL import Image
from starlette.staticfiles import StaticFiles

from service.api.deps import LimiterDep, SettingsDep
from spine_engine.decoding import decode_image
from spine_engine.overlay import display_gray

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
STATIC_PREFIX = "/static"
VIEWER_INDEX = STATIC_DIR / "viewer" / "index.html"
SWAGGER = f"{STATIC_PREFIX}/vendor/swagger-ui"
REDOC = f"{STATIC_PREFIX}/vendor/redoc"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# Content-Security-Policy of the pages: nothing but this service may be loaded or called, which also stops the
# one CDN request the vendored ReDoc makes (its decorative "Redocly" logo; the <img> hides itself on error).
# The docs pages need inline script/style (FastAPI's Swagger UI starter script, ReDoc's styled-components and
# its search worker, started from a blob); the viewer needs neither.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'self'"
)
VIEWER_CSP = "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'self'"
# Preview PNGs are for eyes on a screen: fast compression, like the /segment overlay.
PREVIEW_COMPRESS_LEVEL = 3

router = APIRouter()
# StaticFiles resolves paths safely (no escape from the folder), sets ETag/Last-Modified and answers 304.
_static = StaticFiles(directory=STATIC_DIR)


@router.get("/", include_in_schema=False)
async def viewer() -> FileResponse:
    return FileResponse(VIEWER_INDEX, media_type="text/html", headers={"Content-Security-Policy": VIEWER_CSP})


@router.get(STATIC_PREFIX + "/{path:path}", include_in_schema=False)
async def static_file(path: str, request: Request) -> Response:
    # A route rather than app.mount(): routers cannot carry mounts, and this keeps the app factory's edit to one line.
    return await _static.get_response(path, request.scope)


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
        oauth2_redirect_url=OAUTH2_REDIRECT,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get(OAUTH2_REDIRECT, include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{REDOC}/redoc.standalone.js",
        redoc_favicon_url=f"{SWAGGER}/favicon-32x32.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def _preview_png(data: bytes, filename: str | None, max_pixels: int) -> bytes:
    decoded = decode_image(data, max_pixels, filename)
    buf = io.BytesIO()
    Image.fromarray(display_gray(decoded.pixels), mode="L").save(buf, format="PNG", compress_level=PREVIEW_COMPRESS_LEVEL)
    return buf.getvalue()


@router.post("/viewer/preview", operation_id="viewer_preview", include_in_schema=False)
async def viewer_preview(
    settings: SettingsDep,
    limiter: LimiterDep,
    file: Annotated[UploadFile, File(description="The radiograph: PNG, JPEG, TIFF or DICOM")],
) -> Response:
    """The film as the service decodes it, as an 8-bit gray PNG at the original size.

    For the viewer page: a browser cannot draw DICOM or TIFF, so the page asks for the pixels the service segments
    (modality/VOI LUT applied, stretched between the 0.5 and 99.5 percentiles as in the /segment overlay). Not in
    the OpenAPI document: a helper of the page, not part of the API contract. Bad files are the usual JSON 4xx.
    """
    job = partial(_preview_png, await file.read(), file.filename, settings.max_image_pixels)
    return Response(await anyio.to_thread.run_sync(job, limiter=limiter), media_type="image/png")
