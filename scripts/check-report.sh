#!/usr/bin/env bash
# Renders an eval report.html in headless Chromium with the network cut off, writes a full-page PNG
# screenshot and fails unless the page rendered properly. A manual check (Chromium is a large
# install), not part of CI.
#
# Usage:
#   bash scripts/check-report.sh [REPORT_HTML] [OUT_PNG]
#     REPORT_HTML defaults to eval-out/report.html, OUT_PNG to <report dir>/report.png.
#     CHECK_REPORT_WIDTH sets the viewport width in CSS px (default 1280; the report passes from
#     800 up, where the plots stack one per row).
#   Then look at the PNG (its path is the last line printed on stdout; the findings go to stderr).
#
# Example, from the repository root (the eval takes a few minutes on a small machine):
#   cargo build
#   LIVECHECK_MODEL_DIR=/work/shared/models ./target/debug/livecheck eval \
#       /work/shared/testdata/devset/manifest.csv --out /tmp/evalout
#   bash scripts/check-report.sh /tmp/evalout/report.html    # writes /tmp/evalout/report.png
#
# Needs python3 (standard library only) and Chromium; installs Debian's `chromium` with apt-get
# when neither `chromium` nor `chromium-browser` is on PATH (needs root or sudo).
#
# How it works: Chromium runs headless (--no-sandbox --disable-gpu, background networking,
# component updates, sync and QUIC disabled, a fresh --user-data-dir) and every host name resolves
# to nothing (--host-resolver-rules="MAP * ~NOTFOUND"), so a page that needed the network would
# show it. The script drives Chromium over the DevTools protocol on a pipe
# (--remote-debugging-pipe: no port is opened), loads file://REPORT_HTML and waits for its load
# event, then checks, failing with exit status 1 on any problem:
#   - every request the page made was file:, data:, about: or blob: (none went to a network);
#   - the sections are there (Metrics, ROC and DET, Score histograms, both worst-scored lists) with
#     non-empty tables, and at least 3 inline SVG plots (ROC, DET, one histogram or more);
#   - the DET and ROC plots carry their axis titles; every plot has a non-empty box; within each
#     plot no two text labels (title, legend, ticks, axis titles) overlap and none is clipped;
#   - nothing is cut off: no horizontal scrolling, no plot or table past the right edge, no two
#     plots overlapping;
#   - the screenshot (viewport resized to the full content height, at most 16384 px) exists, is a
#     decodable PNG of the expected size, is larger than 20 kB and is not blank: at least 16
#     distinct colours and at least 1% of its pixels differ from the background colour.
# Chromium's own output goes to a log in the temporary profile; its tail is printed on failure.
# Exit status: 0 all checks passed; 1 a check failed (Chromium failing to start or to load the
# page counts as one); 2 no report file or no python3.
set -euo pipefail

report="${1:-eval-out/report.html}"
if [[ ! -f "$report" ]]; then
    echo "error: $report not found (run: livecheck eval MANIFEST.csv --out eval-out)" >&2
    exit 2
fi
report="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
png="${2:-$(dirname "$report")/report.png}"
case "$png" in
    /*) ;;
    *) png="$(pwd)/$png" ;;
esac

if ! command -v python3 >/dev/null 2>&1; then
    echo "error: python3 is required" >&2
    exit 2
fi

browser=""
for b in chromium chromium-browser; do
    if command -v "$b" >/dev/null 2>&1; then
        browser="$(command -v "$b")"
        break
    fi
done
if [[ -z "$browser" ]]; then
    echo "chromium not found; installing it with apt-get" >&2
    if [[ "$(id -u)" -ne 0 ]]; then
        SUDO=sudo
    else
        SUDO=""
    fi
    $SUDO apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium >&2
    browser="$(command -v chromium)"
fi

rm -f "$png"
exec python3 - "$browser" "$report" "$png" "${CHECK_REPORT_WIDTH:-1280}" <<'PY'
import base64, json, os, pathlib, select, shutil, struct, subprocess, sys, tempfile, time, zlib

browser, report, png_path, width = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
problems = []


def fail(msg):
    problems.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


class Chrome:
    """Chromium driven over --remote-debugging-pipe (commands on fd 3, replies on fd 4)."""

    def __init__(self, profile):
        to_r, self.to_w = os.pipe()
        self.from_r, from_w = os.pipe()
        args = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-quic",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--hide-scrollbars",
            "--user-data-dir=" + profile,
            "--remote-debugging-pipe",
            "--window-size=%d,900" % width,
            "about:blank",
        ]
        self.log_path = os.path.join(profile, "chromium.log")
        log = open(self.log_path, "wb")
        # bash moves the pipe ends to fds 3 and 4, where Chromium expects them.
        self.proc = subprocess.Popen(
            ["bash", "-c", 'exec "$@" 3<&%d 4>&%d' % (to_r, from_w), "bash"] + args,
            pass_fds=(to_r, from_w),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        os.close(to_r)
        os.close(from_w)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self.from_r], [], [], left)
            if ready:
                chunk = os.read(self.from_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe (see %s)" % self.log_path)
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_event(self, method, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["method"] == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Runs in the page; returns what the checks below need.
PAGE_PROBE = r"""
(() => {
  const vw = document.documentElement.clientWidth;
  const box = (e) => { const r = e.getBoundingClientRect();
    return {left: r.left, top: r.top + scrollY, right: r.right, bottom: r.bottom + scrollY,
            width: r.width, height: r.height}; };
  const svgs = [...document.querySelectorAll('svg')].map((s) => ({
    box: box(s),
    title: [...s.querySelectorAll('text')].slice(0, 3).map((t) => t.textContent.trim()).join(' | '),
    texts: [...s.querySelectorAll('text')].map((t) => t.textContent.trim()),
    // Rendered boxes of the non-empty text elements, to find labels that collide or are clipped.
    textBoxes: [...s.querySelectorAll('text')].filter((t) => t.textContent.trim())
      .map((t) => ({text: t.textContent.trim(), ...box(t)})),
  }));
  const tables = [...document.querySelectorAll('table')].map((t) => ({
    box: box(t), rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
    heading: (() => { let e = t.previousElementSibling;
      while (e && e.tagName !== 'H2') e = e.previousElementSibling; return e ? e.textContent : '(page top)'; })(),
  }));
  return JSON.stringify({
    vw, scrollWidth: document.documentElement.scrollWidth,
    headings: [...document.querySelectorAll('h1,h2')].map((h) => h.textContent),
    svgs, tables,
  });
})()
"""


def check_page(page):
    if page["scrollWidth"] > page["vw"]:
        fail("page scrolls sideways: content %dpx wide, viewport %dpx" % (page["scrollWidth"], page["vw"]))
    heads = page["headings"]
    for want in ["Metrics", "ROC and DET", "Score histograms", "Worst-scored live images", "Worst-scored attacks"]:
        if not any(h.startswith(want) for h in heads):
            fail("section %r missing (headings: %s)" % (want, heads))
    for t in page["tables"]:
        if t["box"]["right"] > page["vw"] + 0.5:
            fail("table under %r is cut off on the right (%.0fpx > %dpx)" % (t["heading"], t["box"]["right"], page["vw"]))
    for want in ["Metrics", "Per attack type", "Worst-scored live images", "Worst-scored attacks"]:
        if not any(t["heading"].startswith(want) and t["rows"] > 0 for t in page["tables"]):
            fail("table %r is missing or empty" % want)
    svgs = page["svgs"]
    if len(svgs) < 3:
        fail("only %d SVG plots, expected ROC, DET and histograms" % len(svgs))
    for i, s in enumerate(svgs):
        b = s["box"]
        if b["width"] < 100 or b["height"] < 100:
            fail("plot %d (%s) is %.0fx%.0fpx" % (i, s["title"], b["width"], b["height"]))
        if b["right"] > page["vw"] + 0.5 or b["left"] < -0.5:
            fail("plot %d (%s) is cut off (x %.0f..%.0f, viewport %d)" % (i, s["title"], b["left"], b["right"], page["vw"]))
        if not s["texts"]:
            fail("plot %d has no text (no title, ticks or axis labels)" % i)
        tb = s["textBoxes"]
        for k, t in enumerate(tb):
            if t["left"] < b["left"] - 0.5 or t["right"] > b["right"] + 0.5 or t["top"] < b["top"] - 0.5 or t["bottom"] > b["bottom"] + 0.5:
                fail("plot %d (%s): text %r is cut off by the plot's edge" % (i, s["title"], t["text"]))
            for u in tb[:k]:
                # Overlap of more than 1 px both ways: two labels drawn over each other.
                if min(t["right"], u["right"]) - max(t["left"], u["left"]) > 1 and min(t["bottom"], u["bottom"]) - max(t["top"], u["top"]) > 1:
                    fail("plot %d (%s): labels %r and %r overlap" % (i, s["title"], u["text"], t["text"]))
        for j in range(i):
            o = svgs[j]["box"]
            if b["left"] < o["right"] - 0.5 and o["left"] < b["right"] - 0.5 and b["top"] < o["bottom"] - 0.5 and o["top"] < b["bottom"] - 0.5:
                fail("plots %d and %d overlap" % (j, i))
    texts = [set(s["texts"]) for s in svgs]
    for name, axes in [("ROC", ["APCER (all attack types pooled)", "1 - BPCER"]),
                       ("DET", ["APCER (all attack types pooled)", "BPCER"])]:
        hits = [t for s, t in zip(svgs, texts) if s["texts"] and s["texts"][0].startswith(name)]
        if not hits:
            fail("no %s plot (plot titles: %s)" % (name, [s["title"] for s in svgs]))
        elif not all(a in hits[0] for a in axes):
            fail("%s plot lacks axis titles %s" % (name, axes))
    hist = [s for s in svgs if "p_real" in s["texts"]]
    if not hist:
        fail("no score histogram (a plot with a p_real axis)")
    return len(svgs), len(hist)


def png_pixels(data):
    """Decodes an 8-bit, non-interlaced greyscale/RGB/RGBA PNG into (w, h, bpp, rows)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, w = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or interlace or ctype not in (0, 2, 4, 6):
                raise ValueError("unsupported PNG (depth %d, colour type %d, interlace %d)" % (depth, ctype, interlace))
            bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    if w is None:
        raise ValueError("PNG without IHDR")
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    if len(raw) != h * (stride + 1):
        raise ValueError("PNG data is %d bytes, expected %d" % (len(raw), h * (stride + 1)))
    rows, prev = [], bytearray(stride)
    lo7, hi1 = int.from_bytes(b"\x7f" * stride, "big"), int.from_bytes(b"\x80" * stride, "big")
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:  # bytewise add without carries, on big integers
            a, b = int.from_bytes(line, "big"), int.from_bytes(prev, "big")
            line = bytearray((((a & lo7) + (b & lo7)) ^ ((a ^ b) & hi1)).to_bytes(stride, "big"))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        elif f != 0:
            raise ValueError("bad PNG filter %d" % f)
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def check_png(path, want_w, want_h):
    if not os.path.isfile(path):
        fail("no screenshot written to %s" % path)
        return
    size = os.path.getsize(path)
    if size < 20_000:
        fail("screenshot is only %d bytes" % size)
    try:
        w, h, bpp, rows = png_pixels(open(path, "rb").read())
    except (ValueError, zlib.error, struct.error) as e:
        fail("screenshot is not a readable PNG: %s" % e)
        return
    if (w, h) != (want_w, want_h):
        fail("screenshot is %dx%d, expected %dx%d" % (w, h, want_w, want_h))
    colours, counts = set(), {}
    for r in rows:
        for i in range(0, len(r), bpp):
            px = r[i:i + bpp]
            counts[px] = counts.get(px, 0) + 1
    bg, n_bg = max(counts.items(), key=lambda kv: kv[1])
    share = 1 - n_bg / (w * h)
    print("screenshot: %dx%d, %d bytes, %d colours, %.1f%% non-background pixels" % (w, h, size, len(counts), share * 100), file=sys.stderr)
    if len(counts) < 16:
        fail("screenshot is blank: %d distinct colours" % len(counts))
    if share < 0.01:
        fail("screenshot is blank: only %.2f%% of pixels differ from the background" % (share * 100))


profile = tempfile.mkdtemp(prefix="check-report-")
chrome = None
try:
    chrome = Chrome(profile)
    targets = chrome.call("Target.getTargets")["targetInfos"]
    pages = [t for t in targets if t["type"] == "page"]
    if not pages:
        raise RuntimeError("Chromium opened no page")
    session = chrome.call("Target.attachToTarget", {"targetId": pages[0]["targetId"], "flatten": True})["sessionId"]
    for domain in ("Page", "Network", "Runtime"):
        chrome.call(domain + ".enable", session=session)
    chrome.call("Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
    url = pathlib.Path(report).as_uri()
    nav = chrome.call("Page.navigate", {"url": url}, session=session)
    if nav.get("errorText"):
        raise RuntimeError("cannot open %s: %s" % (url, nav["errorText"]))
    chrome.wait_event("Page.loadEventFired", timeout=60)

    requests = [e["params"]["request"]["url"] for e in chrome.events if e["method"] == "Network.requestWillBeSent"]
    remote = [u for u in requests if u.split(":", 1)[0] not in ("file", "data", "about", "blob")]
    if remote:
        fail("the page requested %d network resource(s): %s" % (len(remote), remote[:5]))
    print("requests: %d (%s)" % (len(requests), ", ".join(sorted({u.split(':', 1)[0] for u in requests}))), file=sys.stderr)

    page = json.loads(chrome.call("Runtime.evaluate", {"expression": PAGE_PROBE, "returnByValue": True},
                                  session=session)["result"]["value"])
    n_svg, n_hist = check_page(page)
    print("page: %d headings, %d tables, %d plots (%d histograms)" % (len(page["headings"]), len(page["tables"]), n_svg, n_hist), file=sys.stderr)

    # Full page: grow the viewport to the content height, then capture it.
    height = int(chrome.call("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"] + 0.999)
    if height > 16384:
        print("note: page is %dpx tall; the screenshot keeps the first 16384px" % height, file=sys.stderr)
        height = 16384
    chrome.call("Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
    shot = chrome.call("Page.captureScreenshot", {"format": "png"}, session=session, timeout=120)
    with open(png_path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
except Exception as e:  # setup or protocol failure: still report it as a failed check
    fail("%s: %s" % (type(e).__name__, e))
    height = None
finally:
    if chrome:
        chrome.close()
        if problems:
            try:
                tail = open(chrome.log_path, "rb").read()[-3000:].decode(errors="replace")
                print("--- chromium log (tail) ---\n" + tail, file=sys.stderr)
            except OSError:
                pass
    shutil.rmtree(profile, ignore_errors=True)

check_png(png_path, width, height if height else 0)
if problems:
    print("check-report: %d problem(s)" % len(problems), file=sys.stderr)
    sys.exit(1)
print("check-report: OK", file=sys.stderr)
print(png_path)
PY
