"""The synchronous client.

One DEALER socket, owned by a background I/O thread that sends what the
caller's threads queue, receives the router's events and hands them to their
requests by id, sends HEARTBEAT while requests are open (PROTOCOL.md §6),
and ends requests that time out. A Client may be used from several threads.
"""

import concurrent.futures
import socket
import threading
import time
from collections import deque
from typing import Any, Dict, Iterator, Optional

import zmq

from . import _wire as w
from ._base import RequestBase
from ._wire import Answer
from .errors import VidiError, VidiTimeout

# a send waits at most SNDTIMEO (1 s) in the I/O thread; this is only a guard
_SEND_WAIT_S = 30.0


class Request(RequestBase):
    """An open request. Iterate it for the text as it streams; ``result()``
    for the whole answer; ``cancel()`` to stop it."""

    def __init__(self, client: "Client", rid: int, timeout: Optional[float]):
        super().__init__(rid, timeout)
        self._client = client
        self._cv = threading.Condition(threading.Lock())

    # the receiver's side: change the state under the lock, wake the waiters
    def _on_token(self, text, n_tokens):
        with self._cv:
            super()._on_token(text, n_tokens)
            self._cv.notify_all()

    def _on_done(self, answer):
        with self._cv:
            super()._on_done(answer)
            self._cv.notify_all()

    def _on_error(self, error):
        with self._cv:
            super()._on_error(error)
            self._cv.notify_all()

    def _on_cancelled_here(self):
        with self._cv:
            super()._on_cancelled_here()
            self._cv.notify_all()

    def __iter__(self) -> Iterator[str]:
        """The answer's text deltas as they come (TOKEN's text). Raises
        VidiError when the request fails."""
        while True:
            with self._cv:
                while not self._deltas and not self._finished:
                    self._cv.wait()
                if self._deltas:
                    delta = self._deltas.popleft()
                elif self._error is not None:
                    raise self._error._copy()
                else:
                    return
            yield delta

    def result(self, timeout: Optional[float] = None) -> Answer:
        """Wait for the end and return the Answer. Raises VidiError when the
        request failed, and VidiTimeout when it did not end within timeout
        seconds (None: no limit but the client's) -- it is then cancelled."""
        timeout = w.check_timeout(timeout)
        with self._cv:
            if self._cv.wait_for(lambda: self._finished, timeout):
                return self._outcome()
        self.cancel()
        raise VidiTimeout("request %d did not end within %g s; it was cancelled" % (self.id, timeout))

    def cancel(self) -> None:
        """Stop the request. Its answer then ends with finish "cancelled"
        (or normally, when it was finishing anyway). Does nothing when it has
        ended."""
        if self._finished or self._cancel_at is not None:
            return
        self._cancel_at = time.monotonic()
        try:
            self._client._send(w.encode(w.CMD_CANCEL, {"id": self.id}))
        except VidiError:
            self._client._forget(self.id)
            self._on_cancelled_here()


class Client:
    """A connection to a vidi router's front socket.

    ``Client("ipc:///run/user/1000/vidi/front")`` or ``tcp://host:port``.
    CURVE: give all three keys (Z85 text), the router's public key and this
    client's key pair. ``timeout``: a request with no event for this many
    seconds is cancelled and raises VidiTimeout (None: never).
    """

    def __init__(self, endpoint: str, *, curve_server_key: Optional[str] = None,
                 curve_public_key: Optional[str] = None, curve_secret_key: Optional[str] = None,
                 timeout: Optional[float] = 120.0):
        w.check_endpoint(endpoint)
        self._timeout = w.check_timeout(timeout)
        curve = w.check_curve(curve_server_key, curve_public_key, curve_secret_key)
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._open: Dict[int, Request] = {}
        self._tx = deque()       # (parts, future, after, flags) for the I/O thread to send
        self._stats = deque()    # futures waiting for STATS answers, in the order asked
        self._next_id = 1
        self._closing = False
        self._ctx = zmq.Context()
        self._sock = self._wake_r = self._wake_w = None
        try:
            self._sock = self._ctx.socket(zmq.DEALER)
            w.setup_socket(self._sock, endpoint, curve)
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._run, name="vidi-client-io", daemon=True)
        self._thread.start()

    # ---- public ----

    def submit(self, messages, *, max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
               top_k: int = 0, seed: Optional[int] = None, stop=None, stop_ids=None,
               stream: bool = True) -> Request:
        """Submit a conversation: a list of {"role": "system"|"user"|"assistant",
        "content": str | [parts]}; a part is a str, {"type": "text", "text": ...} or
        {"type": "image"|"video", "data": bytes | "path": str, fps?, nframes?,
        min_pixels?, max_pixels?}. The answer continues it as the assistant."""
        header, frames = w.messages_request(messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                            top_k=top_k, seed=seed, stop=stop, stop_ids=stop_ids, stream=stream)
        return self._start(header, frames)

    def ask(self, prompt: str, media=(), *, system: Optional[str] = None, **sampling) -> Request:
        """One user turn: the media items in order, then the prompt. An item is
        a path (kind from the extension), bytes (kind sniffed) or a dict as a
        part of submit(). ``sampling``: the keywords of submit()."""
        header, frames = w.ask_request(prompt, media, system=system, **sampling)
        return self._start(header, frames)

    def stats(self, timeout: Optional[float] = 10.0) -> Dict[str, Any]:
        """The router's counters and gauges (STATS, PROTOCOL.md §5.2)."""
        timeout = w.check_timeout(timeout)
        fut = concurrent.futures.Future()

        def asked():  # in the I/O thread, right after the send: answers come in order
            with self._lock:
                self._stats.append(fut)

        self._send(w.encode(w.CMD_STATS, {}), after=asked)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                try:
                    self._stats.remove(fut)
                except ValueError:
                    pass
            raise VidiTimeout("no STATS answer from the router within %g s" % timeout) from None

    def close(self) -> None:
        """Cancel the open requests (they raise VidiError "closed") and close
        the socket. Safe to call twice."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            reqs = list(self._open.values())
            self._open.clear()
            stats = list(self._stats)
            self._stats.clear()
            for r in reqs:  # best effort: the router frees their workers at once
                self._tx.append((w.encode(w.CMD_CANCEL, {"id": r.id}), None, None, zmq.NOBLOCK))
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(10.0)
        err = VidiError("closed", "the client was closed")
        for r in reqs:
            r._on_error(err)
        for f in stats:
            if not f.done():
                f.set_exception(err)
        with self._lock:
            for _, f, _, _ in self._tx:
                if f is not None and not f.done():
                    f.set_exception(err)
            self._tx.clear()
        if not self._thread.is_alive():
            self._release()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self):
        return "<Client %s, %d open%s>" % (self.endpoint, len(self._open), ", closed" if self._closing else "")

    # ---- the caller's side ----

    def _start(self, header, frames) -> Request:
        with self._lock:
            if self._closing:
                raise VidiError("closed", "the client is closed")
            rid = self._next_id
            self._next_id += 1
            r = Request(self, rid, self._timeout)
            self._open[rid] = r
        header = dict({"id": rid}, **header)
        try:
            self._send(w.encode(w.CMD_REQUEST, header, frames))
        except BaseException:
            self._forget(rid)
            raise
        r._last_event = time.monotonic()
        return r

    def _forget(self, rid):
        with self._lock:
            self._open.pop(rid, None)

    def _send(self, parts, after=None):
        """Queue one message for the I/O thread and wait until it went out."""
        fut = concurrent.futures.Future()
        with self._lock:
            if self._closing:
                raise VidiError("closed", "the client is closed")
            self._tx.append((parts, fut, after, 0))
        self._wake()
        try:
            fut.result(_SEND_WAIT_S)
        except concurrent.futures.TimeoutError:
            raise VidiError("io", "the client's I/O thread did not send within %g s" % _SEND_WAIT_S) from None

    def _wake(self):
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the thread wakes anyway

    def _release(self):
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        if self._sock is not None:
            self._sock.close(linger=0)
        self._ctx.term()

    # ---- the I/O thread ----

    def _run(self):
        try:
            self._loop()
        except BaseException as e:  # a bug here must not leave callers waiting forever
            err = VidiError("internal", "the client's I/O thread failed: %r" % (e,))
            with self._lock:
                self._closing = True
                reqs = list(self._open.values())
                self._open.clear()
                stats = list(self._stats)
                self._stats.clear()
                tx = list(self._tx)
                self._tx.clear()
            for r in reqs:
                r._on_error(err)
            for f in stats + [t[1] for t in tx]:
                if f is not None and not f.done():
                    f.set_exception(err)

    def _loop(self):
        sock = self._sock
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        last_sent = time.monotonic()
        while True:
            with self._lock:
                tx = list(self._tx)
                self._tx.clear()
                closing = self._closing
            for parts, fut, after, flags in tx:
                try:
                    sock.send_multipart(parts, flags=flags, copy=False)
                except zmq.ZMQError as e:
                    if fut is not None:
                        why = "the router does not take messages (is it up?)" if e.errno == zmq.EAGAIN else e.strerror
                        fut.set_exception(VidiError("io", "send to %s: %s" % (self.endpoint, why)))
                    continue
                last_sent = time.monotonic()
                if after is not None:
                    after()
                if fut is not None:
                    fut.set_result(None)
            if closing:
                return
            now = time.monotonic()
            with self._lock:
                reqs = list(self._open.values())
                busy = bool(reqs) or bool(self._stats)
            if busy and now - last_sent >= w.HEARTBEAT_S:
                try:
                    sock.send_multipart(w.encode(w.CMD_HEARTBEAT, {}), flags=zmq.NOBLOCK)
                    last_sent = now
                except zmq.ZMQError:
                    pass  # the router is not there: the requests time out
            wait = w.HEARTBEAT_S - (now - last_sent) if busy else w.HEARTBEAT_S
            for r in reqs:
                d = r._deadline()
                if d is None:
                    continue
                if now >= d:
                    self._expire(r, now)
                else:
                    wait = min(wait, d - now)
            for s, _ in poller.poll(max(wait, 0.001) * 1000.0):
                if s is sock:
                    self._receive()
                else:
                    self._drain_wake()

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _receive(self):
        for _ in range(1000):
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._dispatch(parts)

    def _expire(self, r: Request, now):
        why = r._expired(now)
        if why is None:
            return
        self._forget(r.id)
        try:
            self._sock.send_multipart(w.encode(w.CMD_CANCEL, {"id": r.id}), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        if why == "timeout":
            r._on_error(r._timeout_error())
        else:
            r._on_cancelled_here()

    def _dispatch(self, parts):
        d = w.decode(parts)
        if d is None:
            return  # not the protocol: nothing to act on
        cmd, h = d
        if cmd in (w.CMD_TOKEN, w.CMD_DONE, w.CMD_ERROR):
            rid = w.event_id(h)
            if rid is None:
                if cmd == w.CMD_ERROR:
                    self._orphan_error(w.error_of(h))
                return
            with self._lock:
                r = self._open.get(rid) if cmd == w.CMD_TOKEN else self._open.pop(rid, None)
            if r is None:
                return  # a late event of a request that ended here (timeout, close)
            if cmd == w.CMD_TOKEN:
                toks = h.get("tokens")
                r._on_token(w._str(h, "text"), len(toks) if isinstance(toks, list) else 0)
            elif cmd == w.CMD_DONE:
                r._on_done(w.answer_of(h))
            else:
                r._on_error(w.error_of(h))
        elif cmd == w.CMD_STATS:
            with self._lock:
                fut = self._stats.popleft() if self._stats else None
            if fut is not None and not fut.done():
                fut.set_result(h)

    def _orphan_error(self, err: VidiError):
        """An ERROR without an id: the router could not read one of our
        messages (another protocol version, a limit). It may concern any
        request that has had no event yet, and any STATS question: they all
        fail with it (and are cancelled, in case the router does hold them)."""
        with self._lock:
            reqs = [r for r in self._open.values() if r._n_tokens == 0 and not r._streamed]
            for r in reqs:
                del self._open[r.id]
            stats = list(self._stats)
            self._stats.clear()
        for r in reqs:
            try:
                self._sock.send_multipart(w.encode(w.CMD_CANCEL, {"id": r.id}), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            r._on_error(err)
        for f in stats:
            if not f.done():
                f.set_exception(err)
