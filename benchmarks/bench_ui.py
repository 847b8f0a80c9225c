"""The review viewer on localhost (issue 7): first image and sustained scrolling in Chromium.

A chest-like 512×512×300 CT series is uploaded to a real ``basira serve`` and analysed by its
worker with the shipped model release; a radiologist signs in. Then, in Debian's headless
Chromium driven by Playwright, each run opens the study page in a fresh browser context (empty
HTTP cache, the same session cookie) and measures, in the page with ``performance.now()``:

- first image: from navigation start to the first slice drawn on the canvas (the viewer's
  ``stats.firstImageMs``, set with ``performance.mark('basira-first-image')`` in ``draw``);
- scrolling: from slice 0 to the last by ``ArrowDown`` key events, each next key sent once the
  previous slice was drawn, so every slice is painted once; slices drawn per second.

Before the runs the worklist is opened once (Chromium's start-up is not the viewer's); the first
run is the first open of the study after the server started (series not laid out yet); figures
are medians over the runs. Baseline in the same run, the transport floor: the same requests sent by
httpx with the same session cookie (metadata + one slice; every slice one after another, and six
at a time as the viewer does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_predict import _chest_series
from benchmarks.bench_service import BASIRA, _free_port, _Server, _service_env, _tenant_key, _upload
from benchmarks.common import print_table
from serving.ui.sessions import COOKIE_NAME

HOSPITAL = "Benchmark Hospital"
PASSWORD = "benchmark radiologist password"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IN_FLIGHT = 6  # the viewer's MAX_IN_FLIGHT

#: Runs in the page: ArrowDown from slice 0 to the last, each sent once the previous slice was
#: drawn; returns the milliseconds and the number of draws.
SCROLL_JS = """async (n) => {
  const v = window.basiraViewer;
  const canvas = document.getElementById("image");
  const press = (key) =>
    canvas.dispatchEvent(new KeyboardEvent("keydown", { key, bubbles: true }));
  const drawn = (k, before) => new Promise((resolve) => {
    const poll = () => (v.state.k === k && v.stats.draws > before ? resolve() : setTimeout(poll));
    poll();
  });
  let before = v.stats.draws;
  press("Home");
  await drawn(0, before);
  const start = performance.now();
  const first = v.stats.draws;
  for (let k = 1; k < n; k += 1) {
    before = v.stats.draws;
    press("ArrowDown");
    await drawn(k, before);
  }
  return { ms: performance.now() - start, draws: v.stats.draws - first };
}"""


@dataclass(frozen=True)
class _Run:
    first_image_ms: float
    slices_per_s: float


def _analysed_study(url: str, env: dict[str, str], series: Path) -> tuple[str, str]:
    """Upload the series for a new hospital and wait for the worker's analysis; the Study UID
    and how the analysis ended, with its seconds from upload."""
    key = _tenant_key(env, HOSPITAL)
    start = time.monotonic()
    uid = _upload(f"{url}/v1/studies", key, sorted(series.iterdir()))
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < start + 900:
        job = httpx.get(f"{url}/v1/studies/{uid}", headers=headers).json()["latest_job"]
        if job and job["status"] not in ("queued", "running"):
            if job["status"] == "failed":
                raise RuntimeError(f"analysis failed: {job['reasons']}")
            return uid, f"{job['status']} in {time.monotonic() - start:.0f} s"
        time.sleep(1)
    raise TimeoutError("the analysis did not end in 15 minutes")


def _radiologist(env: dict[str, str]) -> None:
    subprocess.run(
        [BASIRA, "users", "create", HOSPITAL, "amina", "--password-stdin"],
        input=PASSWORD,
        env=env,
        text=True,
        capture_output=True,
        check=True,
    )


def _session_cookie(url: str) -> str:
    """Sign in through the form as a browser does; the session cookie's value."""
    with httpx.Client(base_url=url) as http:
        page = http.get("/ui/login").text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        form = {"hospital": HOSPITAL, "username": "amina", "password": PASSWORD}
        http.post("/ui/login", data={**form, "csrf_token": token})
        return str(http.cookies[COOKIE_NAME])


def _browser_run(browser: Any, url: str, cookie: str, uid: str, n_slices: int) -> _Run:
    """Open the study in a fresh context (empty cache), then scroll through every slice."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_cookies([{"name": COOKIE_NAME, "value": cookie, "url": url}])
    page = context.new_page()
    try:
        page.goto(f"{url}/ui/studies/{uid}", wait_until="commit")
        first_ms = _poll(page, "window.basiraViewer?.stats.firstImageMs ?? null")
        _poll(page, "document.getElementById('viewer').dataset.ready === 'true' || null")
        scrolled = page.evaluate(SCROLL_JS, n_slices)
        if scrolled["draws"] != n_slices - 1:
            raise RuntimeError(f"{scrolled['draws']} draws for {n_slices - 1} slices")
        return _Run(float(first_ms), scrolled["draws"] / scrolled["ms"] * 1000)
    finally:
        context.close()


def _open_worklist(browser: Any, url: str, cookie: str) -> None:
    """Open the worklist once, as a radiologist does before a study: Chromium's own start-up
    (first context, first page) then stays out of the first study open measured."""
    context = browser.new_context()
    context.add_cookies([{"name": COOKIE_NAME, "value": cookie, "url": url}])
    context.new_page().goto(f"{url}/ui/", wait_until="load")
    context.close()


def _poll(page: Any, expression: str, timeout_s: float = 60) -> Any:
    """The page expression's first non-null value (``wait_for_function`` needs ``eval``, which
    the UI's CSP forbids; ``evaluate`` goes through the debugger)."""
    deadline = time.monotonic() + timeout_s
    while (value := page.evaluate(expression)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.005)
    return value


def _http_floor(url: str, cookie: str, uid: str, n_slices: int) -> tuple[float, float, float]:
    """httpx with the same cookie: ms for metadata + middle slice; slices/s one at a time and
    IN_FLIGHT at a time."""
    base = f"/ui/api/studies/{uid}"
    with httpx.Client(base_url=url, cookies={COOKIE_NAME: cookie}, timeout=60) as http:

        def fetch(path: str) -> None:
            http.get(path).raise_for_status()

        start = time.perf_counter()
        fetch(f"{base}/meta")
        fetch(f"{base}/slices/{n_slices // 2}")
        first_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        for k in range(n_slices):
            fetch(f"{base}/slices/{k}")
        sequential = n_slices / (time.perf_counter() - start)
        start = time.perf_counter()
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(fetch, [f"{base}/slices/{k}" for k in range(n_slices)]))
        parallel = n_slices / (time.perf_counter() - start)
    return first_ms, sequential, parallel


def _measure(url: str, uid: str, n_slices: int, runs: int) -> list[dict[str, Any]]:
    """Browser runs, then the httpx floor, as table rows."""
    from playwright.sync_api import sync_playwright

    cookie = _session_cookie(url)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            _open_worklist(browser, url, cookie)
            measured = [_browser_run(browser, url, cookie, uid, n_slices) for _ in range(runs)]
        finally:
            browser.close()
    floor = _http_floor(url, cookie, uid, n_slices)
    return _rows(measured, floor, n_slices)


def _rows(
    runs: list[_Run], floor: tuple[float, float, float], n_slices: int
) -> list[dict[str, Any]]:
    first = statistics.median(r.first_image_ms for r in runs)
    scroll = statistics.median(r.slices_per_s for r in runs)
    http_first, http_seq, http_par = floor
    names = ["what", "value", "unit", "baseline (httpx)", "ratio", "goal"]
    rows = [
        ("first image, first open after start", runs[0].first_image_ms, "ms", http_first, None),
        (f"first image, median of {len(runs)} opens", first, "ms", http_first, "≤ 1000 ms"),
        (f"scrolling {n_slices} slices, median", scroll, "slices/s", http_par, "≥ 20 slices/s"),
        (f"httpx {n_slices} slices one at a time", http_seq, "slices/s", None, None),
    ]
    out = []
    for what, value, unit, baseline, goal in rows:
        ratio = value / baseline if baseline else ""
        values = (what, value, unit, baseline or "", ratio, goal or "")
        out.append(dict(zip(names, values, strict=True)))
    out.append({"what": f"load average (1 min) at end: {os.getloadavg()[0]:.2f}"})
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the table rows (``quick``: a 40×128×128 series, two runs)."""
    shape = (40, 128, 128) if quick else (300, 512, 512)
    with tempfile.TemporaryDirectory(prefix="basira-bench-ui-") as tmp:
        root = Path(tmp)
        series = _chest_series(root / "series", shape)
        env = _service_env(root / "service") | {
            "BASIRA_RUN_WORKER": "true",
            "BASIRA_STUDY_QUIET_S": "0",
            "BASIRA_UI_INSECURE_COOKIES": "true",
            "BASIRA_UI_LOGIN_PER_MINUTE": "1000",
        }
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with _Server([BASIRA, "serve", "--port", str(port)], env, f"{url}/healthz"):
            uid, analysis = _analysed_study(url, env, series)
            _radiologist(env)
            rows = _measure(url, uid, shape[0], runs=2 if quick else 4)
    return [*rows, {"what": f"analysis by the shipped model before measuring: {analysis}"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small series (smoke test)")
    args = parser.parse_args()
    print_table("Review viewer: first image and scrolling", run(quick=args.quick))


if __name__ == "__main__":
    main()
