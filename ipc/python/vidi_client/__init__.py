"""vidi_client — the Python SDK of vidi.

Talks to a vidi router (``vidi up``) over ZeroMQ with the wire protocol of
ipc/PROTOCOL.md: submit questions about images and videos, stream the
answers, cancel, read the router's stats.

    from vidi_client import Client

    with Client("ipc:///run/user/1000/vidi/front") as client:
        req = client.ask("Which shape moves?", ["clip.mp4"], max_tokens=64)
        for delta in req:
            print(delta, end="", flush=True)
        print(req.result().finish)

AsyncClient (vidi_client.aio) has the same API for asyncio.
"""

from ._wire import Answer
from .aio import AsyncClient, AsyncRequest
from .client import Client, Request
from .errors import VidiError, VidiTimeout

__version__ = "1.1.0"
PROTOCOL_VERSION = (1, 1)

__all__ = ["Client", "Request", "AsyncClient", "AsyncRequest", "Answer", "VidiError", "VidiTimeout",
           "PROTOCOL_VERSION", "__version__"]
