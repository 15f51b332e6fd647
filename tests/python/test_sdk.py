"""tests/python/test_sdk.py — the Python SDK (ipc/python, vidi_client).

Run by tests/python/run.sh, which starts `vidi up` and sets:
  VIDI_FRONT     the router's front endpoint
  VIDI_EXAMPLES  the examples folder (files of questions.tsv)
  VIDI_EXPECTED  TSV: file, system ('' for the default), question, the answer
                 of single-process `vidi generate` (greedy, 64 tokens)
  VIDI_FAKE_DIR  a folder for the fake routers' ipc:// endpoints (optional)

RouterTests talk to the real router; they fail (never skip) when those
variables are missing. FakeRouterTests run a ROUTER socket here that plays the
router, to check what the SDK puts on the wire byte by byte: framing,
heartbeats, timeouts, CURVE, ERROR without an id.
"""

import asyncio
import os
import shutil
import tempfile
import threading
import time
import unittest

import msgpack
import zmq

from vidi_client import Answer, AsyncClient, Client, VidiError, VidiTimeout

FRONT = os.environ.get("VIDI_FRONT")
EXAMPLES = os.environ.get("VIDI_EXAMPLES")
EXPECTED = os.environ.get("VIDI_EXPECTED")

VERSION = b"VIDI\x01\x01"
HEARTBEAT, REQUEST, TOKEN, DONE, ERROR, CANCEL, STATS = 0x02, 0x03, 0x06, 0x07, 0x08, 0x09, 0x0C


def load_expected(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            file, system, question, answer = line.split("\t", 3)
            rows.append({"file": file, "system": system, "question": question, "answer": answer,
                         "video": file.startswith("video")})
    return rows


class RouterTests(unittest.TestCase):
    """Against the router and workers of `vidi up` (media, encode, prefill, decode on the CPU)."""

    @classmethod
    def setUpClass(cls):
        missing = [k for k in ("VIDI_FRONT", "VIDI_EXAMPLES", "VIDI_EXPECTED") if not os.environ.get(k)]
        if missing:
            raise RuntimeError("set %s (tests/python/run.sh does)" % ", ".join(missing))
        rows = load_expected(EXPECTED)
        cls.plain = [r for r in rows if not r["system"]]
        cls.with_system = [r for r in rows if r["system"]]
        # never pass on nothing: images and videos, and the system row
        if len(cls.plain) < 6 or not any(r["video"] for r in cls.plain) or all(r["video"] for r in cls.plain):
            raise RuntimeError("%s: expected >= 6 answers about images and videos, got %d" % (EXPECTED, len(cls.plain)))
        if not cls.with_system:
            raise RuntimeError("%s: no row with a system turn" % EXPECTED)
        cls.client = Client(FRONT, timeout=60.0)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def path(self, row):
        return os.path.join(EXAMPLES, row["file"])

    def ask(self, row, **kw):
        return self.client.ask(row["question"], [self.path(row)], max_tokens=64, **kw)

    def describe_rows(self):
        rows = [r for r in self.plain if r["question"].startswith("Describe")]
        self.assertTrue(rows, "no Describe question in the expected answers")
        return rows

    def wait_idle(self):
        """Until the router's table is empty (cancelled requests are freed at once)."""
        for _ in range(100):
            st = self.client.stats()
            if st["active"] == 0:
                return st
            time.sleep(0.1)
        self.fail("the router still holds %d requests" % st["active"])

    def test_answers_equal_generate(self):
        compared = kinds = 0
        seen_kinds = set()
        for row in self.plain:
            ans = self.ask(row).result()
            self.assertIsInstance(ans, Answer)
            self.assertEqual(ans.text, row["answer"], "%s: %s" % (row["file"], row["question"]))
            self.assertIn(ans.finish, ("stop", "length"))
            self.assertGreater(ans.tokens, 0)
            self.assertGreater(ans.prompt_tokens, 0)
            self.assertGreater(ans.total_s, 0.0)
            compared += 1
            seen_kinds.add("video" if row["video"] else "image")
        kinds = len(seen_kinds)
        print("\n  %d answers equal single-process vidi generate (%s)" % (compared, ", ".join(sorted(seen_kinds))))
        self.assertGreaterEqual(compared, 6)
        self.assertEqual(kinds, 2)

    def test_stream_deltas_make_the_answer(self):
        for row in self.describe_rows():
            req = self.ask(row)
            deltas = list(req)
            ans = req.result()
            self.assertEqual("".join(deltas), ans.text)
            self.assertEqual(ans.text, row["answer"])
            self.assertGreater(len(deltas), 1, "the answer did not stream: %r" % deltas)
            self.assertTrue(req.done())
            self.assertEqual(req.text, ans.text)
        # stream=False: one delta, the whole answer (from DONE)
        row = self.describe_rows()[0]
        req = self.ask(row, stream=False)
        self.assertEqual(list(req), [row["answer"]])
        self.assertEqual(req.result().text, row["answer"])

    def test_async_client(self):
        rows = [r for r in self.plain if r["video"]][:1] + [r for r in self.plain if not r["video"]][:1]

        async def one(client, row):
            req = await client.ask(row["question"], [self.path(row)], max_tokens=64)
            deltas = [d async for d in req]
            ans = await req.result()
            return req.id, deltas, ans

        async def main():
            async with AsyncClient(FRONT, timeout=60.0) as client:
                got = await asyncio.gather(*(one(client, r) for r in rows))
                stats = await client.stats()
                # the messages form, and a bad media item
                req = await client.submit([{"role": "user", "content": [
                    {"type": "image", "path": self.path(rows[1])}, rows[1]["question"]]}], max_tokens=64)
                chat = await req.result()
                with self.assertRaises(VidiError) as cm:
                    req = await client.ask("What?", [{"type": "image", "data": b"not an image" * 10}])
                    await req.result()
                return got, stats, chat, cm.exception

        got, stats, chat, err = asyncio.run(main())
        self.assertEqual(len({g[0] for g in got}), len(rows))
        for row, (_, deltas, ans) in zip(rows, got):
            self.assertEqual(ans.text, row["answer"])
            self.assertEqual("".join(deltas), ans.text)
        self.assertIsInstance(stats, dict)
        self.assertGreater(stats["requests"], 0)
        self.assertEqual(chat.text, rows[1]["answer"])
        self.assertEqual(err.code, "bad_media")

    def test_concurrent_requests_are_demultiplexed(self):
        rows = self.plain
        self.assertGreater(len({r["answer"] for r in rows}), 2)
        reqs = [self.ask(r) for r in rows]  # all in flight at once
        self.assertEqual(len({q.id for q in reqs}), len(reqs))
        for row, req in reversed(list(zip(rows, reqs))):  # read in the other order
            deltas = list(req)
            self.assertEqual("".join(deltas), row["answer"], "%s: %s" % (row["file"], row["question"]))
            self.assertEqual(req.result().text, row["answer"])
        # and from several threads on one client
        out = {}

        def worker(i, row):
            try:
                out[i] = self.ask(row).result().text
            except Exception as e:  # reported below
                out[i] = e

        threads = [threading.Thread(target=worker, args=(i, r)) for i, r in enumerate(rows[:4])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual([out.get(i) for i in range(len(threads))], [r["answer"] for r in rows[:4]])

    def test_cancel(self):
        row = [r for r in self.describe_rows() if r["video"]][0]
        # cancelled at once: the router has it in media or encode
        req = self.ask(row)
        req.cancel()
        ans = req.result(timeout=30)
        self.assertEqual(ans.finish, "cancelled")
        self.assertLess(ans.tokens, 64)
        req.cancel()  # after the end: nothing
        # cancelled after the first delta
        req = self.ask(row)
        it = iter(req)
        first = next(it)
        req.cancel()
        rest = list(it)
        ans = req.result(timeout=30)
        self.assertIn(ans.finish, ("cancelled", "stop", "length"))
        self.assertEqual(first + "".join(rest), ans.text)
        self.assertTrue(row["answer"].startswith(ans.text))
        # the router freed them, and the client goes on
        st = self.wait_idle()
        self.assertEqual(st["active"], 0)
        self.assertEqual(self.ask(row).result().text, row["answer"])

    def test_bad_media(self):
        video = [r for r in self.plain if r["video"]][0]
        with open(self.path(video), "rb") as f:
            data = f.read()
        for item in ({"type": "image", "data": b"\x89PNG\r\n\x1a\n" + b"\x00" * 200},
                     {"type": "image", "data": b"garbage" * 50},
                     {"type": "video", "data": data[:len(data) // 8]}):
            req = self.client.ask("What is it?", [item], max_tokens=64)
            with self.assertRaises(VidiError) as cm:
                req.result()
            self.assertEqual(cm.exception.code, "bad_media", str(cm.exception))
            self.assertTrue(cm.exception.message)
            with self.assertRaises(VidiError):  # iteration raises it too
                list(req)
        # the client and the router go on
        self.assertEqual(self.ask(video).result().text, video["answer"])

    def test_bad_arguments_raise_before_sending(self):
        c = self.client
        img = self.path([r for r in self.plain if not r["video"]][0])
        before = c.stats()
        cases = [
            (ValueError, lambda: c.ask("")),
            (ValueError, lambda: c.submit([])),
            (TypeError, lambda: c.submit("What?")),
            (ValueError, lambda: c.submit([{"role": "robot", "content": "hi"}])),
            (ValueError, lambda: c.submit([{"role": "user"}])),
            (ValueError, lambda: c.submit([{"role": "user", "content": []}])),
            (TypeError, lambda: c.submit([{"role": "user", "content": 42}])),
            (ValueError, lambda: c.submit([{"role": "user", "content": [{"type": "audio", "data": b"x"}]}])),
            (ValueError, lambda: c.submit([{"role": "user", "content": [{"type": "image"}]}])),
            (ValueError, lambda: c.submit([{"role": "user", "content": [{"type": "image", "data": b"x",
                                                                          "path": img}]}])),
            (ValueError, lambda: c.ask("What?", [b""])),
            (TypeError, lambda: c.ask("What?", [12])),
            (TypeError, lambda: c.ask(None)),
            (FileNotFoundError, lambda: c.ask("What?", ["/nonexistent/file.png"])),
            (ValueError, lambda: c.ask("What?", [img], max_tokens=0)),
            (TypeError, lambda: c.ask("What?", [img], max_tokens=1.5)),
            (ValueError, lambda: c.ask("What?", [img], temperature=-1)),
            (ValueError, lambda: c.ask("What?", [img], top_p=0)),
            (ValueError, lambda: c.ask("What?", [img], stop=["a", "b", "c", "d", "e"])),
            (ValueError, lambda: c.ask("What?", [img], stop=[""])),
            (ValueError, lambda: c.ask("What?", [img], seed=-1)),
            (TypeError, lambda: c.ask("What?", [img], stream="yes")),
            (TypeError, lambda: c.ask("What?", [img], colour="red")),
            (ValueError, lambda: c.ask("What?", [{"path": img, "fps": 2.0}])),  # fps of an image
            (ValueError, lambda: c.ask("What?", [img] * 17)),
            (ValueError, lambda: c.ask("x" * (300 << 10))),
        ]
        for exc, call in cases:
            with self.assertRaises(exc):
                call()
        with self.assertRaises(ValueError):
            Client(FRONT, curve_server_key="x" * 40)
        with self.assertRaises(ValueError):
            Client(FRONT, timeout=0)
        after = c.stats()
        for k in ("requests", "errors", "bad_messages", "overloaded"):
            self.assertEqual(after[k], before[k], "%s: a bad argument reached the router" % k)

    def test_messages_form(self):
        row = self.with_system[0]
        path = self.path(row)
        with open(path, "rb") as f:
            data = f.read()
        sys_turn = {"role": "system", "content": row["system"]}
        for video in ({"type": "video", "path": path}, {"type": "video", "data": data}):
            req = self.client.submit([sys_turn, {"role": "user", "content": [video, {"type": "text",
                                                                                     "text": row["question"]}]}],
                                     max_tokens=64)
            deltas = list(req)
            ans = req.result()
            self.assertEqual(ans.text, row["answer"])
            self.assertEqual("".join(deltas), ans.text)
        # the prompt form with the same system turn
        self.assertEqual(self.client.ask(row["question"], [path], system=row["system"], max_tokens=64).result().text,
                         row["answer"])
        # a turn without system: the template's default, as vidi generate
        plain = [r for r in self.plain if r["video"]][0]
        ans = self.client.submit([{"role": "user", "content": [{"type": "video", "path": self.path(plain)},
                                                               plain["question"]]}], max_tokens=64).result()
        self.assertEqual(ans.text, plain["answer"])
        # a conversation of three turns
        ans = self.client.submit([
            {"role": "user", "content": [{"type": "video", "path": path}, "Which shape moves?"]},
            {"role": "assistant", "content": row["answer"]},
            {"role": "user", "content": "Describe the video."}], max_tokens=64).result()
        self.assertIn(ans.finish, ("stop", "length"))
        self.assertTrue(ans.text)

    def test_stats(self):
        self.ask(self.plain[0]).result()
        st = self.client.stats()
        self.assertIsInstance(st, dict)
        self.assertIsInstance(st["requests"], int)
        self.assertGreaterEqual(st["requests"], 1)
        self.assertGreaterEqual(st["done"], 1)
        self.assertEqual(st["workers"], 4)
        self.assertEqual(st["roles"], {"media": 1, "encode": 1, "prefill": 1, "decode": 1})


# ---- a fake router: what the SDK puts on the wire ----

_fake_n = 0


class FakeRouter:
    def __init__(self, curve_secret_key=None):
        global _fake_n
        _fake_n += 1
        self.own_dir = not os.environ.get("VIDI_FAKE_DIR")
        self.dir = tempfile.mkdtemp(prefix="vidi-py-fake.") if self.own_dir else os.environ["VIDI_FAKE_DIR"]
        self.endpoint = "ipc://%s/fake%d.%d" % (self.dir, os.getpid(), _fake_n)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if curve_secret_key:
            self.sock.setsockopt(zmq.CURVE_SERVER, 1)
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, curve_secret_key)
        self.sock.bind(self.endpoint)

    def close(self):
        self.sock.close(0)
        self.ctx.term()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def recv(self, timeout=5.0):
        """(identity, command, header, frames, raw parts) or None."""
        if not self.sock.poll(timeout * 1000):
            return None
        parts = self.sock.recv_multipart()
        ident, ver, cmd, raw = parts[:4]
        assert ver == VERSION, ver
        assert len(cmd) == 1, cmd
        return ident, cmd[0], msgpack.unpackb(raw, raw=False), parts[4:], parts

    def recv_cmd(self, cmd, timeout=5.0):
        """The next message of this command, past heartbeats."""
        until = time.monotonic() + timeout
        while True:
            m = self.recv(max(until - time.monotonic(), 0.0))
            if m is None or m[1] == cmd:
                return m

    def send(self, ident, cmd, header):
        self.sock.send_multipart([ident, VERSION, bytes((cmd,)), msgpack.packb(header, use_bin_type=True)])


class FakeRouterTests(unittest.TestCase):
    def setUp(self):
        self.fake = FakeRouter()

    def tearDown(self):
        self.fake.close()

    def test_request_framing_prompt_form(self):
        png = b"\x89PNG\r\n\x1a\n" + b"p" * 100
        webm = b"\x1a\x45\xdf\xa3" + b"w" * 50
        with Client(self.fake.endpoint) as c:
            req = c.ask("What moves?", [png, {"data": webm, "fps": 1.0, "nframes": 4}], max_tokens=5, seed=7,
                        stop=["END"], stop_ids=[3], system="Be brief.")
            ident, cmd, h, frames, parts = self.fake.recv_cmd(REQUEST)
            self.assertEqual(parts[1], b"VIDI\x01\x01")
            self.assertEqual(parts[2], b"\x03")
            self.assertEqual(len(parts), 1 + 3 + 2)
            self.assertEqual(h["id"], req.id)
            self.assertEqual(h["prompt"], "What moves?")
            self.assertEqual(h["system"], "Be brief.")
            self.assertNotIn("messages", h)
            self.assertEqual(h["media"], [{"kind": "image", "tensor": 0},
                                          {"kind": "video", "tensor": 1, "fps": 1.0, "nframes": 4}])
            self.assertEqual(h["tensors"], [{"dtype": "u8", "shape": [len(png)], "frame": 0},
                                            {"dtype": "u8", "shape": [len(webm)], "frame": 1}])
            self.assertEqual(frames, [png, webm])
            self.assertEqual((h["max_tokens"], h["temperature"], h["top_p"], h["top_k"], h["seed"]),
                             (5, 0.0, 1.0, 0, 7))
            self.assertEqual((h["stop"], h["stop_ids"], h["stream"]), (["END"], [3], True))
            # the events: deltas, held-back text completed by DONE
            self.fake.send(ident, TOKEN, {"id": req.id, "index": 0, "tokens": [11], "text": "he"})
            self.fake.send(ident, TOKEN, {"id": req.id, "index": 1, "tokens": [12], "text": ""})
            self.fake.send(ident, DONE, {"id": req.id, "finish": "stop", "tokens": 3, "prompt_tokens": 9,
                                         "text": "hello", "cache_hits": 1, "timings": {"total_s": 0.5}})
            self.assertEqual(list(req), ["he", "llo"])
            self.assertEqual(req.result(), Answer("hello", "stop", 3, 9, 1, 0.5))

    def test_request_framing_messages_form(self):
        with tempfile.NamedTemporaryFile(suffix=".mp4") as mp4, tempfile.NamedTemporaryFile(suffix=".jpg") as jpg:
            mp4.write(b"video bytes")
            mp4.flush()
            jpg.write(b"jpeg bytes")
            jpg.flush()
            with Client(self.fake.endpoint) as c:
                req = c.submit([
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "data": b"img"},
                                                 "b", {"type": "video", "path": mp4.name, "fps": 2}]},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "image", "path": jpg.name, "max_pixels": 1000}]},
                ], stream=False, temperature=0.5, top_p=0.9, top_k=5)
                ident, cmd, h, frames, parts = self.fake.recv_cmd(REQUEST)
                self.assertEqual(h["messages"], [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "media": 0}, "b",
                                                 {"type": "video", "media": 1}]},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "image", "media": 2}]}])
                self.assertNotIn("prompt", h)
                self.assertEqual(h["media"], [{"kind": "image", "tensor": 0}, {"kind": "video", "tensor": 1, "fps": 2.0},
                                              {"kind": "image", "tensor": 2, "max_pixels": 1000}])
                self.assertEqual(frames, [b"img", b"video bytes", b"jpeg bytes"])
                self.assertEqual([t["frame"] for t in h["tensors"]], [0, 1, 2])
                self.assertEqual((h["stream"], h["temperature"], h["top_p"], h["top_k"], h["max_tokens"]),
                                 (False, 0.5, 0.9, 5, 128))
                self.assertNotIn("seed", h)
                self.fake.send(ident, DONE, {"id": req.id, "finish": "length", "tokens": 128, "prompt_tokens": 50,
                                             "text": "whole", "cache_hits": 0, "timings": {"total_s": 1.0}})
                self.assertEqual(list(req), ["whole"])

    def test_heartbeats_demultiplexing_and_errors(self):
        with Client(self.fake.endpoint) as c:
            r1 = c.ask("one")
            r2 = c.ask("two")
            ident, _, h1, _, _ = self.fake.recv_cmd(REQUEST)
            _, _, h2, _, _ = self.fake.recv_cmd(REQUEST)
            self.assertEqual((h1["id"], h2["id"]), (r1.id, r2.id))
            self.assertNotEqual(r1.id, r2.id)
            # nothing sent by the client for 1 s: HEARTBEAT {} (one 0x80 byte)
            t0 = time.monotonic()
            beats = []
            while time.monotonic() - t0 < 3.2:
                m = self.fake.recv(0.5)
                if m is not None:
                    beats.append((time.monotonic() - t0, m))
            self.assertGreaterEqual(len(beats), 2, beats)
            for _, m in beats:
                self.assertEqual(m[1], HEARTBEAT)
                self.assertEqual(m[4][3], b"\x80")
            self.assertLess(beats[0][0], 2.0)
            # events of two requests, interleaved, by id
            self.fake.send(ident, TOKEN, {"id": r2.id, "index": 0, "tokens": [1], "text": "B1 "})
            self.fake.send(ident, TOKEN, {"id": r1.id, "index": 0, "tokens": [1], "text": "A1 "})
            self.fake.send(ident, TOKEN, {"id": r2.id, "index": 1, "tokens": [2], "text": "B2"})
            self.fake.send(ident, TOKEN, {"id": 999, "index": 0, "tokens": [1], "text": "nobody's"})
            self.fake.send(ident, DONE, {"id": r2.id, "finish": "stop", "tokens": 2, "prompt_tokens": 3,
                                         "text": "B1 B2", "cache_hits": 0, "timings": {"total_s": 0.1}})
            self.fake.send(ident, ERROR, {"id": r1.id, "code": "overloaded", "message": "retry later"})
            self.assertEqual(list(r2), ["B1 ", "B2"])
            it = iter(r1)
            self.assertEqual(next(it), "A1 ")
            with self.assertRaises(VidiError) as cm:
                next(it)
            self.assertEqual((cm.exception.code, cm.exception.message), ("overloaded", "retry later"))
            with self.assertRaises(VidiError):
                r1.result()
            # the router's deadline: VidiTimeout
            r3 = c.ask("three")
            _, _, h3, _, _ = self.fake.recv_cmd(REQUEST)
            self.fake.send(ident, ERROR, {"id": r3.id, "code": "timeout", "message": "deadline"})
            with self.assertRaises(VidiTimeout):
                r3.result()
            # no request open: no heartbeats
            self.assertIsNone(self.fake.recv(1.6))

    def test_timeout_cancels(self):
        with Client(self.fake.endpoint, timeout=1.0) as c:
            req = c.ask("anyone?")
            ident, _, h, _, _ = self.fake.recv_cmd(REQUEST)
            t0 = time.monotonic()
            with self.assertRaises(VidiTimeout) as cm:
                req.result()
            self.assertEqual(cm.exception.code, "timeout")
            self.assertTrue(isinstance(cm.exception, VidiError))
            self.assertLess(time.monotonic() - t0, 3.0)
            m = self.fake.recv_cmd(CANCEL, 2.0)
            self.assertIsNotNone(m, "no CANCEL after the timeout")
            self.assertEqual(m[2], {"id": req.id})
            # the client goes on: STATS
            out = {}
            t = threading.Thread(target=lambda: out.setdefault("st", c.stats()))
            t.start()
            ident, _, h, _, parts = self.fake.recv_cmd(STATS)
            self.assertEqual(parts[3], b"\x80")
            self.fake.send(ident, STATS, {"requests": 7, "roles": {"media": 1}})
            t.join(5)
            self.assertEqual(out["st"], {"requests": 7, "roles": {"media": 1}})
        with Client(self.fake.endpoint, timeout=None) as c:  # result(timeout): VidiTimeout, and cancelled
            req = c.ask("anyone?")
            self.fake.recv_cmd(REQUEST)
            with self.assertRaises(VidiTimeout):
                req.result(timeout=0.3)
            m = self.fake.recv_cmd(CANCEL, 2.0)
            self.assertEqual(m[2], {"id": req.id})

    def test_error_without_id(self):
        with Client(self.fake.endpoint) as c:
            started = c.ask("started")
            ident, _, h, _, _ = self.fake.recv_cmd(REQUEST)
            self.fake.send(ident, TOKEN, {"id": started.id, "index": 0, "tokens": [1], "text": "x"})
            self.assertEqual(next(iter(started)), "x")
            waiting = c.ask("waiting")
            self.fake.recv_cmd(REQUEST)
            self.fake.send(ident, ERROR, {"code": "bad_version", "message": "this router speaks 2.0"})
            with self.assertRaises(VidiError) as cm:
                waiting.result(timeout=5)
            self.assertEqual(cm.exception.code, "bad_version")
            self.assertFalse(started.done())

    def test_close(self):
        c = Client(self.fake.endpoint)
        req = c.ask("left open")
        self.fake.recv_cmd(REQUEST)
        c.close()
        with self.assertRaises(VidiError) as cm:
            req.result(timeout=5)
        self.assertEqual(cm.exception.code, "closed")
        m = self.fake.recv_cmd(CANCEL, 2.0)
        self.assertEqual(m[2], {"id": req.id})
        with self.assertRaises(VidiError):
            c.ask("after close")
        c.close()

    def test_curve(self):
        server_public, server_secret = zmq.curve_keypair()
        public, secret = zmq.curve_keypair()
        fake = FakeRouter(curve_secret_key=server_secret)
        try:
            with Client(fake.endpoint, curve_server_key=server_public.decode(), curve_public_key=public.decode(),
                        curve_secret_key=secret.decode()) as c:
                req = c.ask("secret?")
                m = fake.recv_cmd(REQUEST)
                self.assertIsNotNone(m, "nothing came over CURVE")
                fake.send(m[0], DONE, {"id": req.id, "finish": "stop", "tokens": 1, "prompt_tokens": 1,
                                       "text": "yes", "cache_hits": 0, "timings": {"total_s": 0.0}})
                self.assertEqual(req.result(timeout=5).text, "yes")
        finally:
            fake.close()
        with self.assertRaises(ValueError):
            Client(self.fake.endpoint, curve_server_key=server_public.decode())
        with self.assertRaises(ValueError):
            Client(self.fake.endpoint, curve_server_key="short", curve_public_key=public.decode(),
                   curve_secret_key=secret.decode())

    def test_async_heartbeats_timeout_and_demultiplexing(self):
        fake = self.fake

        async def main():
            loop = asyncio.get_running_loop()

            def recv(cmd, timeout=5.0):
                return loop.run_in_executor(None, fake.recv_cmd, cmd, timeout)

            async with AsyncClient(fake.endpoint, timeout=3.0) as c:
                r1 = await c.ask("one")
                r2 = await c.ask("two")
                ident, _, h1, _, _ = await recv(REQUEST)
                _, _, h2, _, _ = await recv(REQUEST)
                self.assertEqual((h1["id"], h2["id"]), (r1.id, r2.id))
                beat = await recv(HEARTBEAT, 2.0)
                self.assertIsNotNone(beat, "no HEARTBEAT from the AsyncClient")
                await loop.run_in_executor(None, fake.send, ident, TOKEN,
                                           {"id": r2.id, "index": 0, "tokens": [1], "text": "b"})
                await loop.run_in_executor(None, fake.send, ident, DONE,
                                           {"id": r2.id, "finish": "stop", "tokens": 1, "prompt_tokens": 1,
                                            "text": "b!", "cache_hits": 0, "timings": {"total_s": 0.0}})
                self.assertEqual([d async for d in r2], ["b", "!"])
                self.assertEqual((await r2.result()).finish, "stop")
                t0 = time.monotonic()
                with self.assertRaises(VidiTimeout):
                    await r1.result()  # nothing for r1 for 3 s
                self.assertLess(time.monotonic() - t0, 5.0)
                m = await recv(CANCEL, 2.0)
                self.assertEqual(m[2], {"id": r1.id})
                r3 = await c.ask("three")
                await recv(REQUEST)
                await r3.cancel()
                m = await recv(CANCEL, 2.0)
                self.assertEqual(m[2], {"id": r3.id})
                await loop.run_in_executor(None, fake.send, ident, DONE,
                                           {"id": r3.id, "finish": "cancelled", "tokens": 0, "prompt_tokens": 0,
                                            "text": "", "cache_hits": 0, "timings": {"total_s": 0.0}})
                self.assertEqual((await r3.result(timeout=5)).finish, "cancelled")
                r4 = await c.ask("four")
            with self.assertRaises(VidiError) as cm:
                await r4.result()
            self.assertEqual(cm.exception.code, "closed")

        asyncio.run(main())


if __name__ == "__main__":
    unittest.main()
