#!/usr/bin/env bash
# Regenerate docs/jupyterlab_evaluation.png: JupyterLab showing the executed evaluation notebook
# (results/notebooks/05_evaluation.ipynb) in headless Chromium. Rerun it after the pipeline reruns:
#
#     scripts/screenshot_lab.sh
#
# It starts JupyterLab on the repository root (127.0.0.1, a free port, a random token passed in the URL; offline as
# `make lab`: no news feed, no update check, read-only extension manager), opens the notebook, scrolls to its first
# figure, takes the screenshot and stops the server. JupyterLab's settings, workspaces and runtime files go to a
# temporary folder, so the user's own settings do not change the picture, autosave is off, and nothing is left in the
# repository; the script fails if the notebook file changed.
#
# Needs the project's .venv (`make setup`) and Chromium (Debian: `apt-get install chromium`). Environment overrides:
#   NOTEBOOK   notebook to open, relative to the repository root  (results/notebooks/05_evaluation.ipynb)
#   HEADING    text of a markdown heading to scroll to; empty: the first cell that displays a figure
#   OUT        the PNG                                            (docs/jupyterlab_evaluation.png)
#   SIZE       window size WIDTH,HEIGHT in CSS pixels             (1600,1200)
#   TIMEOUT_S  how long the page may take to open the notebook and render the target cell (120)
#   CHROMIUM   the browser binary                                 (chromium, chromium-browser or google-chrome)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

NOTEBOOK=${NOTEBOOK:-results/notebooks/05_evaluation.ipynb}
HEADING=${HEADING-}
OUT=$(realpath -m "${OUT:-docs/jupyterlab_evaluation.png}")  # absolute: Chromium resolves it in its own cwd
SIZE=${SIZE:-1600,1200}
TIMEOUT_S=${TIMEOUT_S:-120}
PY=$REPO/.venv/bin/python

die() { echo "screenshot_lab: $*" >&2; exit 1; }
[ -x "$PY" ] || die "no $PY: run \`make setup\` first"
[ -f "$NOTEBOOK" ] || die "no $NOTEBOOK: run the pipeline (\`make reproduce\`) first"
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
[ -n "$CHROMIUM" ] || die "Chromium not found (Debian/Ubuntu: apt-get install chromium; or set CHROMIUM=...)"

# JupyterLab writes a checkpoint next to a notebook it opens: remove it afterwards unless it was there before.
CHECKPOINTS=$(dirname "$NOTEBOOK")/.ipynb_checkpoints
[ -e "$CHECKPOINTS" ] && HAD_CHECKPOINTS=1 || HAD_CHECKPOINTS=0
WORK=$(mktemp -d)
SERVER_PID=
CHROMIUM_PID=
stop() {  # stop one of our background processes: TERM, 10 s grace, then KILL
    local pid=$1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    stop "$CHROMIUM_PID"
    stop "$SERVER_PID"  # JupyterLab shuts its kernel down on TERM
    [ "$HAD_CHECKPOINTS" = 1 ] || rm -rf "$CHECKPOINTS"
    rm -rf "$WORK"
}
trap cleanup EXIT

# JupyterLab settings for the shot: no autosave (opening an executed notebook must not rewrite it), no prompt
# about news (a notification toast over the notebook), no update check.
mkdir -p "$WORK/settings/@jupyterlab/docmanager-extension" "$WORK/settings/@jupyterlab/apputils-extension"
echo '{"autosave": false}' > "$WORK/settings/@jupyterlab/docmanager-extension/plugin.jupyterlab-settings"
echo '{"fetchNews": "false", "checkForUpdates": false}' \
    > "$WORK/settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(24))')
NB_HASH=$(sha256sum "$NOTEBOOK" | cut -d' ' -f1)

PATH="$REPO/.venv/bin:$PATH" \
JUPYTER_CONFIG_DIR="$WORK/config" JUPYTER_DATA_DIR="$WORK/data" JUPYTER_RUNTIME_DIR="$WORK/runtime" \
JUPYTERLAB_SETTINGS_DIR="$WORK/settings" JUPYTERLAB_WORKSPACES_DIR="$WORK/workspaces" IPYTHONDIR="$WORK/ipython" \
    "$REPO/.venv/bin/jupyter" lab --ServerApp.root_dir="$REPO" --ServerApp.ip=127.0.0.1 --ServerApp.port="$PORT" \
    --ServerApp.port_retries=0 --IdentityProvider.token="$TOKEN" --ServerApp.open_browser=False \
    --ServerApp.allow_root=True --LabApp.extension_manager=readonly --LabApp.news_url=None \
    --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate > "$WORK/lab.log" 2>&1 &
SERVER_PID=$!

# Headless Chromium with the DevTools protocol on (a plain --screenshot can neither wait for the notebook to render
# nor scroll to a figure, and JupyterLab ignores a URL #fragment while it is still opening the notebook).
"$CHROMIUM" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-extensions \
    --user-data-dir="$WORK/chromium" --remote-debugging-port=0 --window-size="$SIZE" about:blank \
    > "$WORK/chromium.log" 2>&1 &
CHROMIUM_PID=$!

mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
status=0
"$PY" - "$PORT" "$TOKEN" "$NOTEBOOK" "$WORK" "$OUT" "$SIZE" "$HEADING" "$TIMEOUT_S" <<'PYEOF' || status=$?
"""Wait for JupyterLab, open the notebook in Chromium over the DevTools protocol, scroll, take the screenshot."""
import base64, itertools, json, sys, time, urllib.request

import websocket  # websocket-client (requirements.lock)

port, token, notebook, work, out, size, heading, timeout = sys.argv[1:9]
width, height = map(int, size.split(","))
deadline = time.monotonic() + float(timeout)


def fail(msg):
    sys.exit(f"screenshot_lab: {msg}")


def retry(what, fn):
    """fn() until it returns without an OSError/ValueError/StopIteration, or fail at the deadline."""
    while True:
        try:
            return fn()
        except (OSError, ValueError, StopIteration) as e:
            if time.monotonic() > deadline:
                fail(f"{what} did not come up within {timeout} s ({e!r})")
            time.sleep(0.25)


retry("JupyterLab", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2))


def devtools_page():
    # Chromium writes its DevTools port to DevToolsActivePort in the profile folder once it listens.
    devtools = open(f"{work}/chromium/DevToolsActivePort").readline().strip()
    pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list", timeout=5))
    return next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")


ws = websocket.create_connection(retry("Chromium's DevTools endpoint", devtools_page), timeout=30,
                                 suppress_origin=True)
ids = itertools.count(1)


def cdp(method, **params):
    msg_id = next(ids)
    ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
    while True:
        msg = json.loads(ws.recv())
        if msg.get("id") == msg_id:
            if "error" in msg:
                fail(f"DevTools {method}: {msg['error']}")
            return msg["result"]


def js(expression):
    r = cdp("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in r:
        fail(f"JavaScript error: {r['exceptionDetails']}")
    return r["result"].get("value")


STATE = """JSON.stringify({title: document.title,
    cells: document.querySelectorAll('.jp-Notebook .jp-Cell').length,
    images: document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img').length})"""


def wait_for(expression, what, settle=0.0):
    while not js(expression):
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout} s waiting for {what}; page: {js(STATE)}")
        time.sleep(0.25)
    time.sleep(settle)


# The cell to show at the top: the one holding the markdown heading HEADING, else the first cell whose figure sits
# in the top half of the window when the cell is at the top (a figure under a long printout is not the picture).
TARGET = """(() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const heading = %s;
  const figureNearTop = c => {
    const img = c.querySelector('.jp-OutputArea-output img');
    return img !== null && img.getBoundingClientRect().top - c.getBoundingClientRect().top < window.innerHeight / 2;
  };
  const match = heading
    ? c => [...c.querySelectorAll('h1, h2, h3, h4')].some(h => h.textContent.replace(/¶\\s*$/, '').trim() === heading)
    : figureNearTop;
  return cells.find(match) || null;
})()""" % json.dumps(heading)

cdp("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
cdp("Page.enable")
cdp("Page.navigate", url=f"http://127.0.0.1:{port}/lab/tree/{notebook}?token={token}")
wait_for("document.querySelector('.jp-Notebook .jp-Cell') !== null", "the notebook to open", settle=1.0)
wait_for(f"{TARGET} !== null", f"the heading {heading!r}" if heading else "a cell with a figure")
# Scroll the target to the top, let the images decode, and again: the outputs above it may still be growing.
for _ in range(3):
    js(f"{TARGET}.scrollIntoView({{block: 'start'}}); true")
    wait_for("[...document.querySelectorAll('.jp-Notebook img')].every(i => i.complete)", "the figures to load",
             settle=1.0)
# Up to 15 s more for the toolbar's kernel indicator to show an idle kernel rather than a connecting one (cosmetic:
# no failure if it does not).
until = min(deadline, time.monotonic() + 15)
while time.monotonic() < until and js("document.querySelector('.jp-Notebook-ExecutionIndicator')"
                                      "?.getAttribute('data-status')") != "idle":
    time.sleep(0.25)
with open(out, "wb") as f:
    f.write(base64.b64decode(cdp("Page.captureScreenshot", format="png")["data"]))
print(f"screenshot_lab: page {js(STATE)}")
PYEOF
[ "$status" = 0 ] || { echo "--- JupyterLab log:" >&2; tail -20 "$WORK/lab.log" >&2; die "no screenshot"; }
[ -s "$OUT" ] || die "no screenshot written"

# Stop both now (not only in the trap) so the checks below see the final state of the files.
stop "$CHROMIUM_PID"
stop "$SERVER_PID"
[ "$(sha256sum "$NOTEBOOK" | cut -d' ' -f1)" = "$NB_HASH" ] \
    || die "$NOTEBOOK changed while JupyterLab had it open (restore it with: git checkout -- $NOTEBOOK)"
echo "wrote ${OUT#"$REPO"/} ($NOTEBOOK in JupyterLab, ${SIZE/,/x})"
