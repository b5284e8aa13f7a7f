"""The web client: Converse.js (npm package `converse.js`, pinned in package-lock.json) served at
`https://<host>:<port>/`, configured for this server's WebSocket endpoint and domain.

The page loads only from the server itself (a strict Content-Security-Policy): nothing a person
types in the browser goes anywhere but this server.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from ..net.http import HttpService

log = logging.getLogger(__name__)

# Where `npm ci` puts Converse when Stockade runs from its source tree (make run / make test).
DEFAULT_DIST = Path(__file__).resolve().parents[3] / "node_modules" / "converse.js" / "dist"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/dist/converse.min.css">
<script type="module" src="/dist/converse.min.js"></script>
<script type="module" src="/stockade-client.js"></script>
</head>
<body class="converse-fullscreen"></body>
</html>
"""

# Converse v14 loads as an ES module and defines window.converse; initialise once it exists.
INIT = """const settings = {settings};
settings.websocket_url = 'wss://' + window.location.host + {path};
function start() {{
  if (window.converse) {{ window.converse.initialize(settings); }}
  else {{ setTimeout(start, 20); }}
}}
start();
"""


def csp(host: str, public_url: str = "") -> str:
    # Uploaded files live under http.public_url when it is set: the page must reach that origin.
    extra = f" {public_url.rstrip('/')}" if public_url else ""
    return ("default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
            f"connect-src 'self' wss://{host}{extra}; img-src 'self' data: blob:{extra}; media-src 'self' blob:{extra}; "
            "font-src 'self' data:; worker-src 'self' blob:; manifest-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def setup_client(http: HttpService, *, dist: Path | None, domain: str, websocket_path: str,
                 title: str = "Stockade", public_url: str = "") -> bool:
    """Serve the client; returns False (and serves an explanation) when Converse is not installed."""
    dist = dist or DEFAULT_DIST
    installed = (dist / "converse.min.js").is_file()
    settings = {
        "authentication": "login", "default_domain": domain, "discover_connection_methods": False,
        "assets_path": "/dist/", "allow_registration": False, "show_connection_url_input": False,
        "auto_reconnect": True, "view_mode": "fullscreen", "theme": "concord",
        "message_archiving": "always", "muc_domain": f"conference.{domain}",
        "allow_non_roster_messaging": True,
    }

    async def index(request: Request) -> Response:
        if not installed:
            return PlainTextResponse("The web client is not installed on this server: run `make run` "
                                     "(it installs Converse.js with npm) or set web.client_path.", status_code=503)
        return HTMLResponse(PAGE.format(title=title), headers={"content-security-policy": csp(request.url.netloc, public_url)})

    async def init_script(request: Request) -> Response:
        body = INIT.format(settings=json.dumps(settings), path=json.dumps(websocket_path))
        return Response(body, media_type="text/javascript")

    http.add_route("/", index, ["GET"])
    http.add_route("/stockade-client.js", init_script, ["GET"])
    if installed:
        http.mount("/dist", StaticFiles(directory=str(dist)), name="converse")
    else:
        log.warning("the web client is not installed (%s is missing); run `npm ci` in the source tree", dist)
    return installed
