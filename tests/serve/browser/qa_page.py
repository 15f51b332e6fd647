"""tests/serve/browser/qa_page.py — drives vidi-serve's video QA page in
headless Chromium as a user would and checks what the page shows.

usage: qa_page.py BASE_URL VIDEO_NAME QUESTION EXPECTED_FILE [--chromium PATH] [--timeout S]

  1. open BASE_URL/?autotest=1; wait until the model and the samples are listed
  2. upload VIDEO_NAME: fetch BASE_URL/samples/VIDEO_NAME into a File, put it
     in the file input through a DataTransfer and dispatch 'change' (the
     page's own upload path, as when a user picks a file)
  3. type QUESTION into #question (keyboard text input), click #ask (mouse)
  4. while it streams, record every length #answer takes (after each DOM
     mutation, through a MutationObserver, and by polling); wait until
     #status is "done" (or "error: ...")

Checks: #status is "done"; #answer equals EXPECTED_FILE's text (the answer
of single-process `vidi generate`, trailing newlines dropped) exactly; the
answer was seen at 2 or more different non-empty lengths (it streamed);
#frames holds 2 or more img.frame thumbnails that loaded (naturalWidth > 0);
the page threw no uncaught exception. Prints each check; exit 0 when all
pass, 1 otherwise.
"""

import argparse
import json
import sys
import time

import cdp

# Records #answer's length after every DOM mutation, not only when the
# observer runs: pieces appended in one task (SSE events that arrived in one
# network read) are still separate states. Each record's length is rebuilt
# from the final text walking the records backwards (a text node's value
# just after record k is the oldValue of its next characterData record).
OBSERVE_ANSWER = """(() => {
  const a = document.getElementById('answer');
  window.__vidiLengths = [];        // at each observer callback (time-separated)
  window.__vidiRecordLengths = [];  // after each mutation record
  const text = (n, later) => later.has(n) ? later.get(n) : n.textContent;
  new MutationObserver((recs) => {
    const later = new Map(), delta = new Array(recs.length).fill(0);
    for (let k = recs.length - 1; k >= 0; k--) {
      const r = recs[k];
      if (r.type === 'characterData') {
        delta[k] = text(r.target, later).length - r.oldValue.length;
        later.set(r.target, r.oldValue);
      } else {
        for (const n of r.addedNodes) delta[k] += text(n, later).length;
        for (const n of r.removedNodes) delta[k] -= text(n, later).length;
      }
    }
    let len = a.textContent.length - delta.reduce((x, y) => x + y, 0);
    for (const d of delta) window.__vidiRecordLengths.push(len += d);
    window.__vidiLengths.push(a.textContent.length);
  }).observe(a, {childList: true, characterData: true, characterDataOldValue: true, subtree: true});
  return true;
})()"""

UPLOAD = """(async () => {
  const resp = await fetch('/samples/' + encodeURIComponent(%(name)s));
  if (!resp.ok) throw new Error('GET /samples/' + %(name)s + ': HTTP ' + resp.status);
  const blob = await resp.blob();
  const file = new File([blob], %(name)s, {type: %(mime)s});
  const dt = new DataTransfer();
  dt.items.add(file);
  const input = document.getElementById('file');
  input.files = dt.files;
  input.dispatchEvent(new Event('change', {bubbles: true}));
  return file.size;
})()"""

STATE = """(() => ({
  status: document.getElementById('status').textContent,
  answer: document.getElementById('answer').textContent,
}))()"""

FRAMES = """(() => {
  const imgs = [...document.querySelectorAll('#frames img.frame')];
  return {n: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
          info: document.getElementById('frames-info').textContent};
})()"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("video")
    ap.add_argument("question")
    ap.add_argument("expected_file")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--log", help="chromium's output goes here")
    a = ap.parse_args()
    with open(a.expected_file, encoding="utf-8") as f:
        expected = f.read().rstrip("\n")
    mime = "video/webm" if a.video.endswith(".webm") else "video/mp4"

    failures = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        if not ok:
            failures.append(what)

    with cdp.Browser(a.chromium, log=a.log) as browser:
        print(f"qa_page: {browser.version.get('Browser')} on port {browser.port}", flush=True)
        page = browser.page()
        page.send("Runtime.enable")
        page.send("Page.enable")
        page.navigate(a.base.rstrip("/") + "/?autotest=1")
        state = page.wait_for("""(() => {
            const s = document.getElementById('status').textContent;
            if (s.startsWith('error')) return s;
            return document.getElementById('model-name').textContent &&
                   document.getElementById('sample').options.length > 1 ? 'ready' : '';
        })()""", 30, what="the model and the samples to be listed")
        check(state == "ready", f"the page lists the model and the samples ({state})")
        samples = page.eval("[...document.getElementById('sample').options].map(o => o.value).filter(Boolean)")
        check(a.video in samples, f"{a.video} is among the samples {samples}")

        page.eval(OBSERVE_ANSWER)
        size = page.eval(UPLOAD % {"name": json.dumps(a.video), "mime": json.dumps(mime)})
        print(f"qa_page: uploaded {a.video} ({size} bytes) through #file", flush=True)
        preview = page.eval("(() => { const v = document.querySelector('#preview video');"
                            " return v ? v.src.slice(0, 5) : ''; })()")
        check(preview == "blob:", f"the upload is previewed in a <video> from a blob: URL ({preview!r})")
        page.eval("document.getElementById('question').focus()")
        page.type_text(a.question)
        typed = page.eval("document.getElementById('question').value")
        check(typed == a.question, f"#question holds the typed question {typed!r}")
        page.click("#ask")
        started = page.wait_for("document.getElementById('status').textContent", 10,
                                what="the click on #ask to start a request")
        print(f"qa_page: clicked #ask: #status {started!r}", flush=True)

        lengths = set()
        t0 = time.monotonic()
        while True:
            s = page.eval(STATE)
            if s["answer"]:
                lengths.add(len(s["answer"]))
            if s["status"] == "done" or s["status"].startswith("error"):
                break
            if time.monotonic() - t0 > a.timeout:
                break
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        timed = set(lengths) | {n for n in page.eval("window.__vidiLengths") or [] if n > 0}
        records = page.eval("window.__vidiRecordLengths") or []
        lengths = timed | {n for n in records if n > 0}
        print(f"qa_page: status {s['status']!r} after {elapsed:.1f} s; answer {s['answer']!r}", flush=True)
        print(f"qa_page: #answer lengths: {records} after each DOM mutation; {sorted(timed)} seen at "
              f"separate times (polls, observer callbacks)", flush=True)
        if records and records[-1] != len(s["answer"]):
            print(f"qa_page: note: the rebuilt lengths end at {records[-1]}, the answer has {len(s['answer'])}")
        check(s["status"] == "done", f"#status is \"done\" within {a.timeout:.0f} s (got {s['status']!r})")
        check(s["answer"] == expected, f"#answer equals vidi generate's answer {expected!r}")
        check(len(lengths) >= 2, f"#answer grew while streaming ({len(lengths)} different non-empty lengths)")
        usage = page.eval("document.getElementById('usage').textContent")
        print(f"qa_page: usage line {usage!r}", flush=True)

        try:
            fr = page.wait_for(f"(() => {{ const f = {FRAMES}; return f.n >= 2 && f.loaded === f.n ? f : null; }})()",
                               30, what="the frame thumbnails")
        except cdp.CDPError:
            fr = page.eval(FRAMES)
        print(f"qa_page: frames: {fr['info']!r}", flush=True)
        check(fr["n"] >= 2 and fr["loaded"] == fr["n"],
              f"#frames holds >= 2 img.frame thumbnails, all loaded ({fr['loaded']} of {fr['n']})")

        thrown = [p.get("exceptionDetails", {}) for m, p in page.events if m == "Runtime.exceptionThrown"]
        for d in thrown:
            print("qa_page: page exception:", d.get("exception", {}).get("description") or d.get("text"))
        errors = [p for m, p in page.events if m == "Runtime.consoleAPICalled" and p.get("type") == "error"]
        for p in errors:
            print("qa_page: console.error:", " ".join(str(x.get("value", x.get("description"))) for x in p["args"]))
        check(not thrown, f"the page threw no uncaught exception ({len(thrown)})")
        page.close()

    if failures:
        print(f"qa_page: {len(failures)} check(s) failed")
        return 1
    print("qa_page: all checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except cdp.CDPError as e:
        print(f"qa_page: FAIL  {e}")
        sys.exit(1)
