"""What Stockade serves over HTTPS for browsers: the XMPP WebSocket endpoint (RFC 7395),
connection discovery (XEP-0156 host-meta), and the web client."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from ..net.connection import C2SContext
from ..net.http import HttpService
from ..net.websocket import serve_websocket

NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
CORS = {"access-control-allow-origin": "*"}


def websocket_url(request: Any, public_url: str, path: str) -> str:
    """The wss:// URL clients use, from the configured public URL or the request's own host."""
    if public_url:
        return "wss://" + public_url.split("://", 1)[1].rstrip("/") + path
    return f"wss://{request.url.netloc}{path}"


def setup_web(http: HttpService, c2s: C2SContext, *, public_url: str, websocket_path: str,
              allowed_origins: list[str]) -> None:
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await serve_websocket(c2s, websocket, is_secure=True, allowed_origins=allowed_origins)

    async def host_meta(request: Request) -> Response:
        href = websocket_url(request, public_url, websocket_path)
        body = (f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{NS_XRD}'>\n"
                f"  <Link rel='{REL_WEBSOCKET}' href='{href}'/>\n</XRD>\n")
        return Response(body, media_type="application/xrd+xml", headers=CORS)

    async def host_meta_json(request: Request) -> Response:
        href = websocket_url(request, public_url, websocket_path)
        return JSONResponse({"links": [{"rel": REL_WEBSOCKET, "href": href}]}, headers=CORS)

    http.add_websocket_route(websocket_path, websocket_endpoint)
    http.add_route("/.well-known/host-meta", host_meta, ["GET"])
    http.add_route("/.well-known/host-meta.json", host_meta_json, ["GET"])
