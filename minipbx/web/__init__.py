"""The web console and REST API (FastAPI), served inside the PBX process.

:func:`create_app` builds the application over a :class:`WebContext`;
:class:`~minipbx.web.server.WebServer` serves it with uvicorn on the PBX's event loop.
"""

from minipbx.web.app import create_app
from minipbx.web.context import CallView, LiveState, StaticLiveState, TrunkView, WebContext

__all__ = ["CallView", "LiveState", "StaticLiveState", "TrunkView", "WebContext", "create_app"]
