"""tests/serve/test_serve.py — vidi-serve against OpenAI-style clients (run by
tests/serve/run.sh, which starts the router, a worker and vidi-serve and sets
VIDI_SERVE_URL, VIDI_SERVE_KEY, VIDI_EXAMPLES, EXPECT_VIDEO and EXPECT_IMAGE).

A plain HTTP client (urllib) checks the exact shapes: the non-streamed
response, the SSE stream (the first delta carries the role, content deltas,
the finish_reason chunk, the include_usage chunk, `data: [DONE]`), the OpenAI
error body and status of every kind of bad request, /v1/models, /health and
/metrics. The `openai` package checks that a real OpenAI client works,
streamed and not. Answers must equal single-process `vidi generate`."""
import base64
import json
import os
import sys
import urllib.error
import urllib.request

import openai

URL = os.environ["VIDI_SERVE_URL"]
KEY = os.environ["VIDI_SERVE_KEY"]
EX = os.environ["VIDI_EXAMPLES"]
WANT_VIDEO = os.environ["EXPECT_VIDEO"]
WANT_IMAGE = os.environ["EXPECT_IMAGE"]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def data_url(name, mime):
    with open(os.path.join(EX, name), "rb") as f:
        return f"data:{mime};base64," + base64.b64encode(f.read()).decode()


VIDEO = data_url("video_500016.mp4", "video/mp4")
IMAGE = data_url("image_500001.png", "image/png")


def video_msg(question="What moves?", url=VIDEO):
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def image_msg(question="What colour is the square?", url=IMAGE):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def http(method, path, body=None, key=KEY, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def chat(body, **kw):
    return http("POST", "/v1/chat/completions", dict({"model": "vidi-shapes", "max_tokens": 64}, **body), **kw)


# ---- not streamed ----
st, ct, b = chat({"messages": video_msg()})
j = json.loads(b)
check(st == 200 and ct.startswith("application/json"), f"POST video: 200 JSON ({st} {ct})")
check(j.get("object") == "chat.completion" and j["id"].startswith("chatcmpl-") and j["model"] == "vidi-shapes",
      "response object, id and model")
msg = j["choices"][0]["message"]
check(msg == {"role": "assistant", "content": WANT_VIDEO},
      f"video answer '{msg.get('content')}' == vidi generate '{WANT_VIDEO}'")
u = j["usage"]
check(j["choices"][0]["finish_reason"] in ("stop", "length") and u["prompt_tokens"] > 100 and
      u["completion_tokens"] > 0 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"],
      f"finish_reason and usage {u}")
st, _, b = chat({"messages": image_msg()})
check(st == 200 and json.loads(b)["choices"][0]["message"]["content"] == WANT_IMAGE,
      f"image answer == vidi generate '{WANT_IMAGE}'")
st, _, b = chat({"messages": image_msg(url="file://" + os.path.join(EX, "image_500001.png"))})
check(st == 200 and json.loads(b)["choices"][0]["message"]["content"] == WANT_IMAGE,
      "a file:// URL under --allowed-media-root")
st, _, b = chat({"messages": [{"role": "system", "content": "You are a helpful assistant."}] + video_msg(),
                 "mm_processor_kwargs": {"fps": 2.0}, "temperature": 0, "seed": 3, "top_p": 1, "top_k": -1})
check(st == 200 and json.loads(b)["choices"][0]["message"]["content"] == WANT_VIDEO,
      "an explicit default system turn, fps 2 and sampling fields give the same answer")

# ---- streamed, by hand ----
st, ct, b = chat({"messages": video_msg(), "stream": True, "stream_options": {"include_usage": True}})
check(st == 200 and ct.startswith("text/event-stream"), f"stream: 200 text/event-stream ({ct})")
events = [e for e in b.decode().split("\n\n") if e.strip()]
check(all(e.startswith("data: ") for e in events), "every event is one 'data: ' line")
check(events[-1] == "data: [DONE]", "the stream ends with data: [DONE]")
chunks = [json.loads(e[6:]) for e in events[:-1]]
check(all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks),
      "every chunk is a chat.completion.chunk with one id")
check(chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}, "the first delta carries the role")
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
check(text == WANT_VIDEO, f"streamed deltas join to '{text}'")
fin = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
check(len(fin) == 1 and fin[0]["choices"][0]["finish_reason"] in ("stop", "length"), "one finish_reason chunk")
check(chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0,
      "include_usage: a last chunk with choices [] and the usage")
check(all(c["usage"] is None for c in chunks[:-1]), "every other chunk has usage null")
check(len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) >= 2,
      "the answer came in several chunks")

# ---- the openai package ----
client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY)
r = client.chat.completions.create(model="vidi-shapes", messages=video_msg(), max_tokens=64)
check(r.choices[0].message.content == WANT_VIDEO and r.usage.completion_tokens > 0,
      f"openai package: '{r.choices[0].message.content}'")
parts = []
for ch in client.chat.completions.create(model="vidi-shapes", messages=image_msg(), max_tokens=64, stream=True):
    if ch.choices and ch.choices[0].delta.content:
        parts.append(ch.choices[0].delta.content)
check("".join(parts) == WANT_IMAGE, f"openai package, streamed: '{''.join(parts)}'")
check([m.id for m in client.models.list().data] == ["vidi-shapes"], "openai package: models.list")
try:
    client.chat.completions.create(model="no-such-model", messages=image_msg())
    check(False, "openai package: an unknown model raises NotFoundError")
except openai.NotFoundError as e:
    check(e.status_code == 404, "openai package: an unknown model raises NotFoundError")


# ---- bad requests: status and OpenAI error body ----
def bad(name, status, **kw):
    st, ct, b = kw.pop("do")() if "do" in kw else chat(kw.pop("body"), **kw)
    try:
        err = json.loads(b)["error"]
        shape = set(err) == {"message", "type", "param", "code"} and err["code"] == status and err["message"]
    except (ValueError, KeyError, TypeError):
        shape = False
    check(st == status and shape and ct.startswith("application/json"),
          f"{name}: {status} with an OpenAI error body (got {st}: {b[:160]!r})")


bad("invalid JSON", 400, do=lambda: http("POST", "/v1/chat/completions", raw=b'{"model": "vidi-shapes", "mess'))
bad("unknown model", 404, body={"model": "gpt-9", "messages": image_msg()})
bad("no messages", 400, body={"messages": []})
bad("no content", 400, body={"messages": [{"role": "user", "content": []}]})
bad("a tool role", 400, body={"messages": [{"role": "tool", "content": "x"}]})
bad("too many media items", 400,
    body={"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}] * 17 +
                        [{"type": "text", "text": "how many?"}]}]})
bad("oversized body", 413, do=lambda: http("POST", "/v1/chat/completions", raw=b"x" * (9 << 20)))
bad("bad base64", 400, body={"messages": image_msg(url="data:image/png;base64,@@@not base64@@@")})
bad("unsupported media (text as an image)", 400,
    body={"messages": image_msg(url="data:image/png;base64," + base64.b64encode(b"hello, not a picture" * 8).decode())})
bad("unsupported media type", 400, body={"messages": image_msg(url="data:text/plain;base64,aGVsbG8=")})
bad("a path outside the allowed root", 400, body={"messages": image_msg(url="file:///etc/passwd")})
bad("a wrong API key", 401, body={"messages": image_msg()}, key="wrong-key")
bad("no API key", 401, body={"messages": image_msg()}, key=None)
bad("max_tokens 0", 400, body={"messages": image_msg(), "max_tokens": 0})
bad("n = 2", 400, body={"messages": image_msg(), "n": 2})
bad("an unknown route", 404, do=lambda: http("GET", "/v1/nothing"))
bad("GET on chat completions", 405, do=lambda: http("GET", "/v1/chat/completions"))
bad("a corrupt video", 400, body={"messages": video_msg(url="data:video/mp4;base64," +
                                                          base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 200).decode())})

# ---- remote media: refused by default, fetched with --allow-remote-media ----
remote = os.environ["VIDI_MEDIA_HTTP"] + "/video_500016.mp4"
bad("an http URL without --allow-remote-media", 400, body={"messages": video_msg(url=remote)})
req = urllib.request.Request(os.environ["VIDI_SERVE_REMOTE_URL"] + "/v1/chat/completions",
                             data=json.dumps({"model": "vidi-shapes", "max_tokens": 64,
                                              "messages": video_msg(url=remote)}).encode(), method="POST")
with urllib.request.urlopen(req, timeout=120) as r:
    got = json.loads(r.read())["choices"][0]["message"]["content"]
check(got == WANT_VIDEO, f"--allow-remote-media fetches the video over HTTP: '{got}'")
req = urllib.request.Request(os.environ["VIDI_SERVE_REMOTE_URL"] + "/v1/chat/completions",
                             data=json.dumps({"model": "vidi-shapes", "messages": video_msg(
                                 url=os.environ["VIDI_MEDIA_HTTP"] + "/no-such-file.mp4")}).encode(), method="POST")
try:
    urllib.request.urlopen(req, timeout=60)
    check(False, "a remote 404 is a 400")
except urllib.error.HTTPError as e:
    check(e.code == 400 and "cannot fetch" in json.loads(e.read())["error"]["message"], "a remote 404 is a 400")

# ---- still serving ----
st, _, b = chat({"messages": image_msg()})
check(st == 200 and json.loads(b)["choices"][0]["message"]["content"] == WANT_IMAGE,
      "after the bad requests the service still answers")

# ---- models, health, metrics ----
st, _, b = http("GET", "/v1/models")
check(st == 200 and json.loads(b)["data"][0]["id"] == "vidi-shapes", "GET /v1/models")
st, _, b = http("GET", "/health", key=None)
check(st == 200, "GET /health (no key needed)")
st, ct, b = http("GET", "/metrics", key=None)
m = b.decode()
check(st == 200 and ct.startswith("text/plain; version=0.0.4"), "GET /metrics: Prometheus text")


def metric(name):
    for line in m.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


for name in ("vidi_time_to_first_token_seconds_count", "vidi_inter_token_latency_seconds_count",
             "vidi_request_queue_time_seconds_count", "vidi_generation_tokens_total", "vidi_prompt_tokens_total",
             "vidi_mm_cache_queries_total"):
    check((metric(name) or 0) > 0, f"metric {name} = {metric(name)}")
check(metric("vidi_mm_cache_hits_total") is not None and metric("vidi_num_requests_running") is not None and
      metric("vidi_num_requests_waiting") is not None, "cache hits and running/waiting gauges are exported")
check('vidi_workers{model_name="vidi-shapes",role="prefill"} 1' in m, "workers per role")
# the worker speculates with the draft model (tests/serve/run.sh): drafts, acceptance, per position
for name in ("vidi_spec_decode_num_steps_total", "vidi_spec_decode_num_draft_tokens_total",
             "vidi_spec_decode_num_accepted_tokens_total",
             'vidi_spec_decode_num_draft_tokens_per_pos_total{model_name="vidi-shapes",position="0"}',
             'vidi_spec_decode_num_accepted_tokens_per_pos_total{model_name="vidi-shapes",position="0"}'):
    v = next((float(l.rsplit(" ", 1)[1]) for l in m.splitlines() if l.startswith(name)), None)
    check((v or 0) > 0, f"metric {name} = {v}")
# the router's load monitor: every stage's workers, time per unit of work, the latency window
for stage in ("media", "encode", "prefill", "decode"):
    check(f'vidi_stage_workers{{model_name="vidi-shapes",stage="{stage}"}} 1' in m, f"stage {stage}'s workers")
check(any(l.startswith('vidi_stage_service_seconds{model_name="vidi-shapes",stage="prefill"}') and
          float(l.rsplit(" ", 1)[1]) > 0 for l in m.splitlines()), "prefill's time per prompt")
check(any(l.startswith('vidi_stage_token_seconds{model_name="vidi-shapes",stage="prefill"}') and
          float(l.rsplit(" ", 1)[1]) > 0 for l in m.splitlines()), "prefill's time per prompt token")
check('vidi_role_switches_total{model_name="vidi-shapes"} 0' in m and
      'vidi_role_switches_unhelpful_total{model_name="vidi-shapes"} 0' in m and
      'vidi_stage_draining{model_name="vidi-shapes",stage="decode"} 0' in m, "role switching: none without --switch-ms")
check(any(l.startswith("vidi_slo_window_requests") and float(l.rsplit(" ", 1)[1]) > 0 for l in m.splitlines()) and
      'vidi_slo_target_seconds{model_name="vidi-shapes",metric="ttft"} 2' in m, "the latency window and targets")
check("# TYPE vidi_time_to_first_token_seconds histogram" in m and
      'vidi_time_to_first_token_seconds_bucket{model_name="vidi-shapes",le="+Inf"}' in m, "histogram exposition")

print(f"vidi-serve: {len(failures)} failed" if failures else "vidi-serve: every check passed")
sys.exit(1 if failures else 0)
