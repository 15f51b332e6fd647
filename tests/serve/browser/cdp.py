"""tests/serve/browser/cdp.py — a small Chrome DevTools Protocol driver, Python
3 standard library only: start headless Chromium, speak CDP to one page over
a websocket (RFC 6455, written here: masked client frames, text frames,
fragmented messages, ping/pong, close), evaluate JavaScript and send input.

    with Browser("/usr/bin/chromium") as b:
        page = b.page()
        page.navigate("http://127.0.0.1:8080/")
        print(page.eval("document.title"))

Chromium is started with --remote-debugging-port=0 and the port it picked is
read from DevToolsActivePort in its profile folder (no port to guess); the
page's websocket address comes from GET /json/list.
"""

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class CDPError(Exception):
    """A protocol error, a JavaScript exception, or a timeout."""


class WebSocket:
    """A minimal websocket client (RFC 6455) over a plain TCP socket."""

    def __init__(self, url, timeout=30.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "ws":
            raise CDPError("only ws:// URLs are supported: " + url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + ("?" + u.query if u.query else "")
        req = (f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port or 80}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise CDPError("websocket handshake refused: " + lines[0])
        fields = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if fields.get("sec-websocket-accept") != want:
            raise CDPError("websocket handshake: bad Sec-WebSocket-Accept")

    def _read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise CDPError("websocket closed by the browser")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_until(self, sep):
        while sep not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CDPError("connection closed during the websocket handshake")
            self.buf += chunk
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _send_frame(self, opcode, payload):
        n = len(payload)
        head = bytes([0x80 | opcode])                   # FIN, no extensions
        if n < 126:
            head += bytes([0x80 | n])                   # MASK bit: clients always mask
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + _mask(payload, mask))

    def send_text(self, text):
        self._send_frame(OP_TEXT, text.encode("utf-8"))

    def recv_text(self, timeout):
        """The next whole text message (fragments joined); answers pings."""
        self.sock.settimeout(timeout)
        parts, first_op = [], None
        while True:
            b0, b1 = self._read_exact(2)
            fin, opcode = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            mask = self._read_exact(4) if b1 & 0x80 else None
            payload = self._read_exact(n)
            if mask:
                payload = _mask(payload, mask)
            if opcode == OP_PING:
                self._send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                raise CDPError("websocket closed by the browser")
            if opcode in (OP_TEXT, OP_BINARY):
                if first_op is not None:
                    raise CDPError("websocket: a new message inside a fragmented one")
                first_op = opcode
            elif opcode != OP_CONT or first_op is None:
                raise CDPError(f"websocket: unexpected opcode {opcode}")
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return data.decode("utf-8") if first_op == OP_TEXT else data

    def close(self):
        try:
            self._send_frame(OP_CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def _mask(data, mask):
    """XOR data with the 4-byte mask repeated (as one big integer: fast)."""
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class Page:
    """One CDP session to a page target: commands, events, JavaScript."""

    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events = []          # every event received, in order: (method, params)

    def send(self, method, params=None, timeout=30.0):
        """Sends a command and returns its result; events arriving meanwhile
        are kept in self.events."""
        self.next_id += 1
        cid = self.next_id
        self.ws.send_text(json.dumps({"id": cid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"{method}: no answer in {timeout:.0f} s")
            try:
                msg = json.loads(self.ws.recv_text(left))
            except socket.timeout:
                raise CDPError(f"{method}: no answer in {timeout:.0f} s") from None
            if msg.get("id") == cid:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error'].get('message')} {msg['error'].get('data', '')}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append((msg["method"], msg.get("params", {})))

    def eval(self, expression, timeout=30.0):
        """Evaluates JavaScript in the page (promises awaited) and returns the
        value as JSON gives it; a thrown exception raises CDPError."""
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                           "returnByValue": True, "userGesture": True,
                                           "timeout": int(timeout * 1000)}, timeout=timeout + 5)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            what = d.get("exception", {}).get("description") or d.get("text", "exception")
            raise CDPError(f"JavaScript: {what}")
        return r.get("result", {}).get("value")

    def navigate(self, url, timeout=30.0):
        """Opens url and waits until the document has loaded."""
        r = self.send("Page.navigate", {"url": url})
        if r.get("errorText"):
            raise CDPError(f"navigate {url}: {r['errorText']}")
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout,
                      what="the page to load")

    def wait_for(self, expression, timeout, what=None, interval=0.1):
        """Polls a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.eval(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise CDPError(f"timed out after {timeout:.0f} s waiting for {what or expression}")
            time.sleep(interval)

    def type_text(self, text):
        """Types into the focused element as a keyboard would insert it."""
        self.send("Input.insertText", {"text": text})

    def click(self, selector, timeout=5.0):
        """A real mouse click (move, press, release) at the centre of the
        element, once a hit test there finds the element (not something laid
        over it, nor a spot it left while the layout moved)."""
        probe = f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            if (!e) return null;
            e.scrollIntoView({{block: 'center'}});
            const r = e.getBoundingClientRect();
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            const hit = document.elementFromPoint(x, y);
            return {{x, y, hit: !!hit && (hit === e || e.contains(hit))}};
        }})()"""
        deadline = time.monotonic() + timeout
        while True:
            box = self.eval(probe)
            if not box:
                raise CDPError(f"click: no element matches {selector}")
            if box["hit"]:
                break
            if time.monotonic() > deadline:
                raise CDPError(f"click: {selector} is covered at its centre")
            time.sleep(0.05)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"],
                                                   "button": "left", "clickCount": 1})

    def close(self):
        self.ws.close()


class Browser:
    """Headless Chromium with a throw-away profile; a context manager."""

    def __init__(self, binary="/usr/bin/chromium", timeout=30.0, log=None):
        self.profile = tempfile.mkdtemp(prefix="vidi-chromium.")
        self.log = open(log or os.path.join(self.profile, "chromium.log"), "wb")
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--mute-audio",
                "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        self.port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise CDPError(f"chromium exited with status {self.proc.returncode} (log: {self.log.name})")
            try:
                with open(port_file) as f:
                    first = f.readline().strip()
                if first:
                    self.port = int(first)
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        if not self.port:
            self.close()
            raise CDPError(f"chromium did not open its debugging port in {timeout:.0f} s")
        self.version = self.http_json("/json/version")

    def http_json(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return json.load(r)

    def page(self, timeout=10.0):
        """A CDP session to the first page target (the about:blank tab)."""
        deadline = time.monotonic() + timeout
        while True:
            pages = [t for t in self.http_json("/json/list") if t.get("type") == "page"]
            if pages:
                return Page(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise CDPError("chromium has no page target")
            time.sleep(0.1)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # chromium's helpers (zygote, renderers) share its session
        try:
            os.killpg(self.proc.pid, 9)
        except OSError:
            pass
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
