"""The wire protocol of vidi's front socket (ipc/PROTOCOL.md), shared by the
synchronous and the asyncio client: framing, REQUEST building with argument
checks, and decoding of the router's replies.

Nothing here does I/O except reading media files named by path.
"""

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import msgpack
import zmq

from .errors import VidiError, VidiTimeout

# PROTOCOL.md §2: "VIDI", major 1, minor 1
VERSION = b"VIDI\x01\x01"
MAJOR = 1

# PROTOCOL.md §3
CMD_HEARTBEAT = 0x02
CMD_REQUEST = 0x03
CMD_TOKEN = 0x06
CMD_DONE = 0x07
CMD_ERROR = 0x08
CMD_CANCEL = 0x09
CMD_STATS = 0x0C
CMD_DISCONNECT = 0x0D

# PROTOCOL.md §1 and §6
HWM = 1000
SNDTIMEO_MS = 1000
HEARTBEAT_S = 1.0

# PROTOCOL.md §4 and §5.2 (what the router accepts)
MAX_FRAMES = 256
MAX_HEADER_BYTES = 1 << 20
MAX_FRAME_BYTES = 1 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_STRING = 256 << 10
MAX_SYSTEM = 64 << 10
MAX_MEDIA = 16
MAX_TURNS = 64
MAX_PARTS = 256
MAX_STOPS = 4
MAX_STOP_BYTES = 256
MAX_STOP_IDS = 16
MAX_TOKENS = 32768
MAX_TOP_K = 1 << 20
MAX_FPS = 120.0
MAX_NFRAMES = 768
MAX_PIXELS = 1 << 28
MAX_U64 = (1 << 64) - 1
MAX_TOKEN_ID = (1 << 31) - 1

ROLES = ("system", "user", "assistant")
KINDS = ("image", "video")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
MEDIA_OPTIONS = ("fps", "nframes", "min_pixels", "max_pixels")


@dataclass(frozen=True)
class Answer:
    """A finished request (DONE, PROTOCOL.md §5.2)."""

    text: str
    """The whole answer (cut before a stop string when one ended it)."""
    finish: str
    """"stop", "length" or "cancelled"."""
    tokens: int
    """Tokens generated."""
    prompt_tokens: int
    """Tokens of the prompt, media included."""
    cache_hits: int
    """Media items served from the router's MM-token cache."""
    total_s: float
    """Seconds from the router's admission to the end."""


# ---- framing ----

def encode(cmd: int, header: Dict[str, Any], frames=()) -> List[Any]:
    """The parts of one message: version, command byte, msgpack header, raw frames."""
    h = msgpack.packb(header, use_bin_type=True)
    return [VERSION, bytes((cmd,)), h, *frames]


def decode(parts) -> Optional[Tuple[int, Dict[str, Any]]]:
    """(command, header) of a received message, or None when it breaks §2."""
    if len(parts) < 3:
        return None
    v, c, h = (bytes(p) for p in parts[:3])
    if len(v) != 6 or v[:4] != b"VIDI" or v[4] != MAJOR or len(c) != 1:
        return None
    try:
        header = msgpack.unpackb(h, raw=False, unicode_errors="replace")
    except Exception:  # any malformed msgpack: msgpack raises several types
        return None
    if not isinstance(header, dict):
        return None
    return c[0], header


def _int(h, k, default=0):
    v = h.get(k, default)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _str(h, k, default=""):
    v = h.get(k, default)
    return v if isinstance(v, str) else default


def answer_of(h: Dict[str, Any]) -> Answer:
    t = h.get("timings")
    total = t.get("total_s", 0.0) if isinstance(t, dict) else 0.0
    return Answer(text=_str(h, "text"), finish=_str(h, "finish"), tokens=_int(h, "tokens"),
                  prompt_tokens=_int(h, "prompt_tokens"), cache_hits=_int(h, "cache_hits"),
                  total_s=float(total) if isinstance(total, (int, float)) else 0.0)


def error_of(h: Dict[str, Any]) -> VidiError:
    code = _str(h, "code", "internal") or "internal"
    message = _str(h, "message")
    if code == "timeout":
        return VidiTimeout(message or "the request's deadline passed")
    return VidiError(code, message)


def event_id(h: Dict[str, Any]) -> Optional[int]:
    v = h.get("id")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


# ---- sockets ----

def check_endpoint(endpoint):
    if not isinstance(endpoint, str):
        raise TypeError("endpoint must be a str such as 'ipc:///run/user/1000/vidi/front' or 'tcp://host:port'")
    if "://" not in endpoint:
        raise ValueError("endpoint %r: expected TRANSPORT://ADDRESS (ipc:// or tcp://)" % endpoint)


def check_timeout(timeout, name="timeout"):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("%s must be a number of seconds or None" % name)
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError("%s must be > 0 (or None: wait forever), got %r" % (name, timeout))
    return None if math.isinf(timeout) else float(timeout)


def check_curve(server_key, public_key, secret_key):
    keys = (server_key, public_key, secret_key)
    if all(k is None for k in keys):
        return None
    if any(k is None for k in keys):
        raise ValueError("CURVE needs all three of curve_server_key, curve_public_key and curve_secret_key")
    out = []
    for name, k in zip(("curve_server_key", "curve_public_key", "curve_secret_key"), keys):
        if isinstance(k, str):
            k = k.encode("ascii", "replace")
        if not isinstance(k, (bytes, bytearray)):
            raise TypeError("%s must be the Z85 text of the key (a str of 40 characters)" % name)
        if len(k) != 40:
            raise ValueError("%s must be 40 characters of Z85 text, got %d" % (name, len(k)))
        out.append(bytes(k))
    if not zmq.has("curve"):
        raise VidiError("io", "this libzmq was built without CURVE")
    return tuple(out)


def setup_socket(sock, endpoint, curve):
    """The DEALER options of PROTOCOL.md §1 (and CURVE), then connect."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.setsockopt(zmq.SNDTIMEO, SNDTIMEO_MS)
    if curve:
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve[0])
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve[1])
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve[2])
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        if e.errno in (zmq.EINVAL, zmq.EPROTONOSUPPORT):
            raise ValueError("endpoint %r: %s" % (endpoint, e.strerror)) from None
        raise VidiError("io", "connect %s: %s" % (endpoint, e.strerror)) from None


# ---- requests ----

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int(name, v, lo, hi):
    if not _is_int(v):
        raise TypeError("%s must be an int, got %s" % (name, type(v).__name__))
    if not lo <= v <= hi:
        raise ValueError("%s must be in [%d, %d], got %d" % (name, lo, hi, v))
    return v


def _check_num(name, v, lo, hi, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("%s must be a number, got %s" % (name, type(v).__name__))
    v = float(v)
    if math.isnan(v) or v > hi or v < lo or (lo_open and v <= lo):
        raise ValueError("%s must be in %s%g, %g], got %r" % (name, "(" if lo_open else "[", lo, hi, v))
    return v


def _check_text(name, v, limit=MAX_STRING):
    if not isinstance(v, str):
        raise TypeError("%s must be a str, got %s" % (name, type(v).__name__))
    n = len(v.encode("utf-8", "surrogatepass"))
    if n > limit:
        raise ValueError("%s is %d bytes of UTF-8: the limit is %d" % (name, n, limit))
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("%s is not valid Unicode (lone surrogates)" % name) from None
    return v


def sampling(max_tokens=128, temperature=0.0, top_p=1.0, top_k=0, seed=None, stop=None, stop_ids=None,
             stream=True) -> Dict[str, Any]:
    """The sampling fields of REQUEST (§5.2), checked as the router checks them."""
    h = {
        "max_tokens": _check_int("max_tokens", max_tokens, 1, MAX_TOKENS),
        "temperature": _check_num("temperature", temperature, 0.0, 100.0),
        "top_p": _check_num("top_p", top_p, 0.0, 1.0, lo_open=True),
        "top_k": _check_int("top_k", top_k, 0, MAX_TOP_K),
    }
    if seed is not None:
        h["seed"] = _check_int("seed", seed, 0, MAX_U64)
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, (list, tuple)):
            raise TypeError("stop must be a str or a list of str")
        if len(stop) > MAX_STOPS:
            raise ValueError("stop: at most %d strings, got %d" % (MAX_STOPS, len(stop)))
        for i, s in enumerate(stop):
            _check_text("stop[%d]" % i, s, MAX_STOP_BYTES)
            if not s:
                raise ValueError("stop[%d] is empty" % i)
        if stop:
            h["stop"] = list(stop)
    if stop_ids is not None:
        if not isinstance(stop_ids, (list, tuple)):
            raise TypeError("stop_ids must be a list of token ids")
        if len(stop_ids) > MAX_STOP_IDS:
            raise ValueError("stop_ids: at most %d, got %d" % (MAX_STOP_IDS, len(stop_ids)))
        h["stop_ids"] = [_check_int("stop_ids[%d]" % i, t, 0, MAX_TOKEN_ID) for i, t in enumerate(stop_ids)]
    if not isinstance(stream, bool):
        raise TypeError("stream must be a bool")
    h["stream"] = stream
    return h


def guess_kind(path: str) -> str:
    """"video" for the extensions of VIDEO_EXTENSIONS, else "image"."""
    return "video" if os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS else "image"


def sniff_kind(data) -> str:
    """A guess from a file's first bytes: the usual video containers, else "image"."""
    head = bytes(memoryview(data)[:16])
    if head[:4] == b"\x1a\x45\xdf\xa3":            # EBML: Matroska, WebM
        return "video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] == b"ftyp" and head[8:12] not in (b"heic", b"heix", b"avif", b"avis", b"mif1", b"msf1"):
        return "video"                              # MP4, MOV, 3GP
    return "image"


def _bytes_of(name, data):
    if isinstance(data, str):
        raise TypeError("%s: data must be bytes (the file's contents), not str; give a path with 'path'" % name)
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError("%s: data must be a bytes-like object, got %s" % (name, type(data).__name__)) from None
    if not mv.c_contiguous:
        raise ValueError("%s: data must be contiguous" % name)
    if mv.itemsize != 1 or mv.ndim != 1:
        mv = mv.cast("B")
    if mv.nbytes == 0:
        raise ValueError("%s: the media data is empty" % name)
    if mv.nbytes > MAX_FRAME_BYTES:
        raise ValueError("%s: %d bytes: the limit is %d" % (name, mv.nbytes, MAX_FRAME_BYTES))
    # bytes travel zero-copy; a mutable buffer is copied, so that changing it
    # after submit() cannot change what goes out
    return data if isinstance(data, bytes) else mv.tobytes()


def _read(name, path):
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError("%s: path must be a str or os.PathLike" % name) from None
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if not p:
        raise ValueError("%s: the path is empty" % name)
    with open(p, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError("%s: %s is empty" % (name, p))
    if len(data) > MAX_FRAME_BYTES:
        raise ValueError("%s: %s is %d bytes: the limit is %d" % (name, p, len(data), MAX_FRAME_BYTES))
    return p, data


class _Item:
    __slots__ = ("kind", "data", "opts")

    def __init__(self, kind, data, opts):
        self.kind, self.data, self.opts = kind, data, opts


def media_item(name, m, kind=None) -> _Item:
    """One media item: a path (str / PathLike), bytes, or a dict
    {type?: "image"|"video", data: bytes | path: str, fps?, nframes?, min_pixels?, max_pixels?}."""
    opts = {}
    if isinstance(m, dict):
        known = ("type", "data", "path") + MEDIA_OPTIONS
        extra = [k for k in m if k not in known]
        if extra:
            raise ValueError("%s: unknown key(s) %s (known: %s)" % (name, ", ".join(map(repr, extra)), ", ".join(known)))
        t = m.get("type", kind)
        if t is not None and t not in KINDS:
            raise ValueError("%s: type must be 'image' or 'video', got %r" % (name, t))
        if ("data" in m) == ("path" in m):
            raise ValueError("%s: give exactly one of 'data' (the file's bytes) and 'path'" % name)
        if "path" in m:
            p, data = _read(name, m["path"])
            kind = t or guess_kind(p)
        else:
            data = _bytes_of(name, m["data"])
            kind = t or sniff_kind(data)
        for k in MEDIA_OPTIONS:
            v = m.get(k)
            if v is None:
                continue
            if k == "fps":
                opts[k] = _check_num("%s: fps" % name, v, 0.0, MAX_FPS, lo_open=True)
            elif k == "nframes":
                opts[k] = _check_int("%s: nframes" % name, v, 1, MAX_NFRAMES)
            else:
                opts[k] = _check_int("%s: %s" % (name, k), v, 1, MAX_PIXELS)
        if kind == "image" and ("fps" in opts or "nframes" in opts):
            raise ValueError("%s: fps and nframes are for videos" % name)
    elif isinstance(m, (str, os.PathLike)):
        p, data = _read(name, m)
        kind = kind or guess_kind(p)
    elif isinstance(m, (bytes, bytearray, memoryview)):
        data = _bytes_of(name, m)
        kind = kind or sniff_kind(data)
    else:
        raise TypeError("%s: a media item is a path, bytes or a dict, got %s" % (name, type(m).__name__))
    return _Item(kind, data, opts)


def _media_fields(items: List[_Item]):
    if len(items) > MAX_MEDIA:
        raise ValueError("at most %d media items in a request, got %d" % (MAX_MEDIA, len(items)))
    total = sum(memoryview(it.data).nbytes for it in items)
    if total > MAX_TOTAL_BYTES - MAX_HEADER_BYTES:
        raise ValueError("the media add up to %d bytes: the limit of a message is %d" % (total, MAX_TOTAL_BYTES))
    media, tensors, frames = [], [], []
    for i, it in enumerate(items):
        media.append(dict({"kind": it.kind, "tensor": i}, **it.opts))
        tensors.append({"dtype": "u8", "shape": [memoryview(it.data).nbytes], "frame": i})
        frames.append(it.data)
    return media, tensors, frames


def _finish(header, media, tensors, frames):
    if media:
        header["media"] = media
        header["tensors"] = tensors
    parts_header = msgpack.packb(header, use_bin_type=True)
    if len(parts_header) > MAX_HEADER_BYTES:
        raise ValueError("the request's header is %d bytes: the limit is %d" % (len(parts_header), MAX_HEADER_BYTES))
    return header, frames


def ask_request(prompt, media=(), system=None, **samp) -> Tuple[Dict[str, Any], list]:
    """(header without id, frames) of a REQUEST in the `prompt` form: the media
    items in order, then the prompt."""
    _check_text("prompt", prompt)
    if media is None:
        media = []
    elif isinstance(media, (str, bytes, bytearray, memoryview, dict, os.PathLike)):
        media = [media]  # one item
    else:
        try:
            media = list(media)
        except TypeError:
            raise TypeError("media must be a list of items (paths, bytes or dicts)") from None
    if not prompt and not media:
        raise ValueError("an empty prompt without media: nothing to ask")
    header = {"prompt": prompt}
    if system is not None:
        header["system"] = _check_text("system", system, MAX_SYSTEM)
    header.update(sampling(**samp))
    items = [media_item("media[%d]" % i, m) for i, m in enumerate(media)]
    return _finish(header, *_media_fields(items))


def messages_request(messages, **samp) -> Tuple[Dict[str, Any], list]:
    """(header without id, frames) of a REQUEST in the `messages` form."""
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, (list, tuple)):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if not messages:
        raise ValueError("messages is empty")
    if len(messages) > MAX_TURNS:
        raise ValueError("at most %d messages, got %d" % (MAX_TURNS, len(messages)))
    items: List[_Item] = []
    turns = []
    n_parts = 0
    for t, msg in enumerate(messages):
        name = "messages[%d]" % t
        if not isinstance(msg, dict):
            raise TypeError("%s must be a dict with 'role' and 'content'" % name)
        extra = [k for k in msg if k not in ("role", "content")]
        if extra:
            raise ValueError("%s: unknown key(s) %s" % (name, ", ".join(map(repr, extra))))
        role = msg.get("role")
        if role not in ROLES:
            raise ValueError("%s: role must be one of %s, got %r" % (name, ", ".join(ROLES), role))
        if "content" not in msg:
            raise ValueError("%s: no 'content'" % name)
        content = msg["content"]
        if isinstance(content, str):
            _check_text(name + ".content", content)
            turns.append({"role": role, "content": content})
            n_parts += 1
            continue
        if not isinstance(content, (list, tuple)):
            raise TypeError("%s: content must be a str or a list of parts" % name)
        if not content:
            raise ValueError("%s: content is empty" % name)
        parts = []
        for k, p in enumerate(content):
            pname = "%s.content[%d]" % (name, k)
            if isinstance(p, str):
                parts.append(_check_text(pname, p))
                continue
            if not isinstance(p, dict):
                raise TypeError("%s: a part is a str or a dict, got %s" % (pname, type(p).__name__))
            typ = p.get("type")
            if typ == "text":
                extra = [x for x in p if x not in ("type", "text")]
                if extra:
                    raise ValueError("%s: unknown key(s) %s" % (pname, ", ".join(map(repr, extra))))
                if "text" not in p:
                    raise ValueError("%s: a text part needs 'text'" % pname)
                parts.append({"type": "text", "text": _check_text(pname + ".text", p["text"])})
            elif typ in KINDS:
                items.append(media_item(pname, p))
                parts.append({"type": typ, "media": len(items) - 1})
            else:
                raise ValueError("%s: type must be 'text', 'image' or 'video', got %r" % (pname, typ))
        n_parts += len(parts)
        turns.append({"role": role, "content": parts})
    if n_parts > MAX_PARTS:
        raise ValueError("at most %d parts in all the messages, got %d" % (MAX_PARTS, n_parts))
    header = {"messages": turns}
    header.update(sampling(**samp))
    return _finish(header, *_media_fields(items))
