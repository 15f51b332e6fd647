"""The asyncio client (zmq.asyncio): the API of Client, awaited.

    async with AsyncClient(endpoint) as client:
        req = await client.ask("What moves?", ["clip.mp4"])
        async for delta in req:
            print(delta, end="")
        answer = await req.result()

A receiver task, started by the first request in the running event loop,
reads the router's events, hands them to their requests by id, sends
HEARTBEAT while requests are open and ends requests that time out. Use an
AsyncClient from one event loop.
"""

import asyncio
import functools
import time
from collections import deque
from typing import Any, AsyncIterator, Dict, Optional

import zmq
import zmq.asyncio

from . import _wire as w
from ._base import RequestBase
from ._wire import Answer
from .errors import VidiError, VidiTimeout


class AsyncRequest(RequestBase):
    """An open request: ``async for delta in req``, ``await req.result()``,
    ``await req.cancel()``."""

    def __init__(self, client: "AsyncClient", rid: int, timeout: Optional[float]):
        super().__init__(rid, timeout)
        self._client = client
        self._changed = asyncio.Event()

    def _on_token(self, text, n_tokens):
        super()._on_token(text, n_tokens)
        self._changed.set()

    def _on_done(self, answer):
        super()._on_done(answer)
        self._changed.set()

    def _on_error(self, error):
        super()._on_error(error)
        self._changed.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self):
        while True:
            if self._deltas:
                yield self._deltas.popleft()
                continue
            if self._finished:
                if self._error is not None:
                    raise self._error._copy()
                return
            self._changed.clear()
            await self._changed.wait()

    async def _until_finished(self):
        while not self._finished:
            self._changed.clear()
            await self._changed.wait()

    async def result(self, timeout: Optional[float] = None) -> Answer:
        """The Answer, once the request ended. Raises VidiError when it failed,
        VidiTimeout when it did not end within timeout seconds (it is then
        cancelled)."""
        timeout = w.check_timeout(timeout)
        if not self._finished:
            try:
                await asyncio.wait_for(self._until_finished(), timeout)
            except asyncio.TimeoutError:
                await self.cancel()
                raise VidiTimeout("request %d did not end within %g s; it was cancelled" % (self.id, timeout)) from None
        return self._outcome()

    async def cancel(self) -> None:
        """Stop the request: it ends with finish "cancelled" (or normally, when
        it was finishing anyway). Does nothing when it has ended."""
        if self._finished or self._cancel_at is not None:
            return
        self._cancel_at = time.monotonic()
        try:
            await self._client._send(w.encode(w.CMD_CANCEL, {"id": self.id}))
        except VidiError:
            self._client._open.pop(self.id, None)
            self._on_cancelled_here()


class AsyncClient:
    """A connection to a vidi router's front socket, for asyncio. The
    arguments are those of Client."""

    def __init__(self, endpoint: str, *, curve_server_key: Optional[str] = None,
                 curve_public_key: Optional[str] = None, curve_secret_key: Optional[str] = None,
                 timeout: Optional[float] = 120.0):
        w.check_endpoint(endpoint)
        self._timeout = w.check_timeout(timeout)
        curve = w.check_curve(curve_server_key, curve_public_key, curve_secret_key)
        self.endpoint = endpoint
        self._open: Dict[int, AsyncRequest] = {}
        self._stats = deque()
        self._next_id = 1
        self._closed = False
        self._task: Optional[asyncio.Task] = None
        self._last_sent = time.monotonic()
        self._ctx = zmq.asyncio.Context()
        self._sock = None
        try:
            self._sock = self._ctx.socket(zmq.DEALER)
            w.setup_socket(self._sock, endpoint, curve)
        except BaseException:
            if self._sock is not None:
                self._sock.close(linger=0)
            self._ctx.term()
            raise

    # ---- public ----

    async def submit(self, messages, *, max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
                     top_k: int = 0, seed: Optional[int] = None, stop=None, stop_ids=None,
                     stream: bool = True) -> AsyncRequest:
        """As Client.submit."""
        build = functools.partial(w.messages_request, messages, max_tokens=max_tokens, temperature=temperature,
                                  top_p=top_p, top_k=top_k, seed=seed, stop=stop, stop_ids=stop_ids, stream=stream)
        return await self._start(build)

    async def ask(self, prompt: str, media=(), *, system: Optional[str] = None, **sampling) -> AsyncRequest:
        """As Client.ask."""
        return await self._start(functools.partial(w.ask_request, prompt, media, system=system, **sampling))

    async def stats(self, timeout: Optional[float] = 10.0) -> Dict[str, Any]:
        """The router's counters and gauges (STATS)."""
        timeout = w.check_timeout(timeout)
        self._check_open()
        self._ensure_receiver()
        fut = asyncio.get_running_loop().create_future()
        # answers come in the order asked; _send hands the message to the
        # socket before it first waits, so two stats() queue and send alike
        self._stats.append(fut)
        try:
            await self._send(w.encode(w.CMD_STATS, {}))
        except BaseException:
            try:
                self._stats.remove(fut)
            except ValueError:
                pass
            raise
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            try:
                self._stats.remove(fut)
            except ValueError:
                pass
            raise VidiTimeout("no STATS answer from the router within %g s" % timeout) from None

    def close(self) -> None:
        """Cancel the open requests (they raise VidiError "closed") and close
        the socket. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        reqs = list(self._open.values())
        self._open.clear()
        raw = zmq.Socket.shadow(self._sock.underlying)
        for r in reqs:  # best effort, without waiting
            try:
                raw.send_multipart(w.encode(w.CMD_CANCEL, {"id": r.id}), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        err = VidiError("closed", "the client was closed")
        for r in reqs:
            r._on_error(err)
        while self._stats:
            f = self._stats.popleft()
            if not f.done():
                f.set_exception(err)
        if self._task is not None and not self._task.done():
            try:
                self._task.cancel()
            except RuntimeError:  # its loop is closed
                pass
        self._sock.close(linger=0)
        self._ctx.term()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def __repr__(self):
        return "<AsyncClient %s, %d open%s>" % (self.endpoint, len(self._open), ", closed" if self._closed else "")

    # ---- internals ----

    def _check_open(self):
        if self._closed:
            raise VidiError("closed", "the client is closed")

    async def _start(self, build) -> AsyncRequest:
        self._check_open()
        # checks and file reads off the event loop (a video may be large)
        header, frames = await asyncio.get_running_loop().run_in_executor(None, build)
        self._check_open()
        rid = self._next_id
        self._next_id += 1
        r = AsyncRequest(self, rid, self._timeout)
        self._open[rid] = r
        self._ensure_receiver()
        try:
            await self._send(w.encode(w.CMD_REQUEST, dict({"id": rid}, **header), frames))
        except BaseException:
            self._open.pop(rid, None)
            raise
        r._last_event = time.monotonic()
        return r

    async def _send(self, parts, flags=0):
        self._check_open()
        try:
            await self._sock.send_multipart(parts, flags=flags, copy=False)
        except zmq.ZMQError as e:
            why = "the router does not take messages (is it up?)" if e.errno == zmq.EAGAIN else e.strerror
            raise VidiError("io", "send to %s: %s" % (self.endpoint, why)) from None
        self._last_sent = time.monotonic()

    def _ensure_receiver(self):
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a bug here must not leave callers waiting forever
            err = VidiError("internal", "the client's receiver failed: %r" % (e,))
            reqs = list(self._open.values())
            self._open.clear()
            for r in reqs:
                r._on_error(err)
            while self._stats:
                f = self._stats.popleft()
                if not f.done():
                    f.set_exception(err)

    async def _loop(self):
        while not self._closed:
            now = time.monotonic()
            busy = bool(self._open) or bool(self._stats)
            if busy and now - self._last_sent >= w.HEARTBEAT_S:
                try:
                    await self._send(w.encode(w.CMD_HEARTBEAT, {}), flags=zmq.NOBLOCK)
                except VidiError:
                    pass  # the router is not there: the requests time out
                now = time.monotonic()
            wait = w.HEARTBEAT_S - (now - self._last_sent) if busy else w.HEARTBEAT_S
            for r in list(self._open.values()):
                d = r._deadline()
                if d is None:
                    continue
                if now >= d:
                    await self._expire(r, now)
                else:
                    wait = min(wait, d - now)
            if self._closed:
                return
            ev = await self._sock.poll(max(wait, 0.001) * 1000.0, zmq.POLLIN)
            if ev & zmq.POLLIN:
                for _ in range(1000):
                    try:
                        parts = await self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._dispatch(parts)

    async def _expire(self, r: AsyncRequest, now):
        why = r._expired(now)
        if why is None:
            return
        self._open.pop(r.id, None)
        try:
            await self._send(w.encode(w.CMD_CANCEL, {"id": r.id}), flags=zmq.NOBLOCK)
        except VidiError:
            pass
        if why == "timeout":
            r._on_error(r._timeout_error())
        else:
            r._on_cancelled_here()

    def _dispatch(self, parts):
        d = w.decode(parts)
        if d is None:
            return
        cmd, h = d
        if cmd in (w.CMD_TOKEN, w.CMD_DONE, w.CMD_ERROR):
            rid = w.event_id(h)
            if rid is None:
                if cmd == w.CMD_ERROR:
                    self._orphan_error(w.error_of(h))
                return
            r = self._open.get(rid) if cmd == w.CMD_TOKEN else self._open.pop(rid, None)
            if r is None:
                return
            if cmd == w.CMD_TOKEN:
                toks = h.get("tokens")
                r._on_token(w._str(h, "text"), len(toks) if isinstance(toks, list) else 0)
            elif cmd == w.CMD_DONE:
                r._on_done(w.answer_of(h))
            else:
                r._on_error(w.error_of(h))
        elif cmd == w.CMD_STATS:
            fut = self._stats.popleft() if self._stats else None
            if fut is not None and not fut.done():
                fut.set_result(h)

    def _orphan_error(self, err: VidiError):
        """As Client._orphan_error."""
        raw = zmq.Socket.shadow(self._sock.underlying)
        for r in [r for r in self._open.values() if r._n_tokens == 0 and not r._streamed]:
            del self._open[r.id]
            try:
                raw.send_multipart(w.encode(w.CMD_CANCEL, {"id": r.id}), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            r._on_error(err)
        while self._stats:
            f = self._stats.popleft()
            if not f.done():
                f.set_exception(err)
