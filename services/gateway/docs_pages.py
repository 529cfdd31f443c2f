"""`/docs` (Swagger UI) and `/redoc`, served with their scripts and styles from the installed
`fastapi-offline` package rather than a CDN, so they work where the gateway has no internet and
load nothing from a third party."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response

from services.gateway.problems import Problem

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
PREFIX = "/docs/assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"

router = APIRouter(include_in_schema=False)


def asset_bytes(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> Response:
    if name not in ASSETS:
        raise Problem(404, "not-found", f"No asset {name}.")
    return Response(asset_bytes(name), media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"})


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{PREFIX}/favicon.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
        swagger_ui_parameters=app.swagger_ui_parameters,
    )


@router.get(OAUTH2_REDIRECT)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{PREFIX}/favicon.png",
        with_google_fonts=False,
    )
