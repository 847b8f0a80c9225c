"""The review viewer on localhost (issues 7 and 17): first image, sustained scrolling and MIP
slabs in each plane in Chromium, and the worklist over 10,000 studies.

A chest-like 512×512×300 CT series is uploaded to a real ``basira serve`` and analysed by its
worker with the shipped model release; a radiologist signs in. Then, in Debian's headless
Chromium driven by Playwright, each run opens the study page in a fresh browser context (empty
HTTP cache, the same session cookie) and measures, in the page with ``performance.now()``:

- first image in each plane: from navigation start to the first image drawn on the plane's
  canvas (``stats.firstImageMsByPlane``); the three-view layout is asked for as soon as the
  axial image is drawn, so the coronal and sagittal figures include the server decoding the
  series volume on the first open;
- scrolling, one plane at a time in the one-view layout: from image 0 to the last by
  ``ArrowDown`` key events, each next key sent once the previous image was drawn, so every
  image is painted once; images drawn per second;
- MIP: from turning the 10 mm slab on to its image drawn, on an image not fetched before.

Before the runs the worklist is opened once (Chromium's start-up is not the viewer's); the first
run is the first open of the study after the server started (series not laid out yet); figures
are medians over the runs. Baseline in the same run, the transport floor: the same requests sent by
httpx with the same session cookie (metadata + one slice; every slice one after another, and six
at a time as the viewer does).

The worklist (issue 17): a real ``basira serve`` on SQLite, then on PostgreSQL, holding 10,000
studies of one hospital (seeded as ingest and the worker leave them, ``tests/serving/ui/
worklist_seed.py``) and 50 of another; httpx with a radiologist's session cookie asks for one
page of 50 rows, sorted, filtered and searched as a radiologist does, 15 times each after one
warm-up; the median and the slowest of each. Baseline in the same run: the same request for the
hospital with 50 studies (one page, nothing left to sort or skip).
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
from serving.db import Database
from serving.tenants import get_tenant
from serving.ui.sessions import COOKIE_NAME
from tests.serving.postgres import postgres_base_url, private_schema
from tests.serving.ui.worklist_seed import seed_worklist

HOSPITAL = "Benchmark Hospital"
PASSWORD = "benchmark radiologist password"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IN_FLIGHT = 6  # the viewer's MAX_IN_FLIGHT

PLANES = ("axial", "coronal", "sagittal")

#: Runs in the page: ArrowDown from image 0 to the last of the active plane (the plane's own
#: canvas has the key events), each sent once the previous image was drawn; returns the
#: milliseconds and the number of draws.
SCROLL_JS = """async (name) => {
  const v = window.basiraViewer;
  const key = { axial: "k", coronal: "j", sagittal: "i" }[name];
  const n = v.planes[name].n;
  const canvas = v.planes[name].canvas;
  const press = (k) =>
    canvas.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true }));
  const drawn = (k, before) => new Promise((resolve) => {
    const poll = () =>
      v.state[key] === k && v.stats.draws > before ? resolve() : setTimeout(poll);
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
  return { ms: performance.now() - start, draws: v.stats.draws - first, n };
}"""

#: Runs in the page: turn the 10 mm MIP slab on (the active plane's image at the slab is not
#: fetched yet) and return the milliseconds until it is drawn.
MIP_JS = """async () => {
  const v = window.basiraViewer;
  const select = document.getElementById("slab");
  const before = v.stats.draws;
  const start = performance.now();
  select.value = "10";
  select.dispatchEvent(new Event("change"));
  await new Promise((resolve) => {
    const poll = () =>
      v.state.slab === 10 && v.stats.draws > before ? resolve() : setTimeout(poll);
    poll();
  });
  const ms = performance.now() - start;
  select.value = "0";
  select.dispatchEvent(new Event("change"));
  return ms;
}"""


@dataclass(frozen=True)
class _Run:
    """One open of the study: ms from navigation start to each plane's first image (coronal
    and sagittal asked for as soon as the axial image is drawn), images drawn per second
    scrolling each plane, and ms to display a 10 mm MIP slab image in each plane."""

    first_image_ms: dict[str, float]
    images_per_s: dict[str, float]
    mip_ms: dict[str, float]


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


def _radiologist(env: dict[str, str], hospital: str) -> None:
    subprocess.run(
        [BASIRA, "users", "create", hospital, "amina", "--password-stdin"],
        input=PASSWORD,
        env=env,
        text=True,
        capture_output=True,
        check=True,
    )


def _session_cookie(url: str, hospital: str = HOSPITAL) -> str:
    """Sign in through the form as a browser does; the session cookie's value."""
    with httpx.Client(base_url=url) as http:
        page = http.get("/ui/login").text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        form = {"hospital": hospital, "username": "amina", "password": PASSWORD}
        http.post("/ui/login", data={**form, "csrf_token": token})
        return str(http.cookies[COOKIE_NAME])


def _browser_run(browser: Any, url: str, cookie: str, uid: str) -> _Run:
    """Open the study in a fresh context (empty cache) and ask for three views at once; then,
    one plane at a time in the one-view layout, scroll through every image and show a slab."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_cookies([{"name": COOKIE_NAME, "value": cookie, "url": url}])
    page = context.new_page()
    try:
        page.goto(f"{url}/ui/studies/{uid}", wait_until="commit")
        _poll(page, "window.basiraViewer?.stats.firstImageMs ?? null")
        page.evaluate("document.getElementById('layout-toggle').click()")
        first = {
            name: float(
                _poll(page, f"window.basiraViewer.stats.firstImageMsByPlane.{name} ?? null")
            )
            for name in PLANES
        }
        _poll(page, "document.getElementById('viewer').dataset.ready === 'true' || null")
        page.evaluate("document.getElementById('layout-toggle').click()")
        scroll, mip = {}, {}
        for name in PLANES:
            page.evaluate(f"document.querySelector('[data-plane={name}]').click()")
            scrolled = page.evaluate(SCROLL_JS, name)
            if scrolled["draws"] != scrolled["n"] - 1:
                raise RuntimeError(f"{scrolled['draws']} draws for {scrolled['n'] - 1} images")
            scroll[name] = scrolled["draws"] / scrolled["ms"] * 1000
            page.keyboard.press("PageUp")  # an image whose slab is not fetched yet
            mip[name] = float(page.evaluate(MIP_JS))
        return _Run(first, scroll, mip)
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
            measured = [_browser_run(browser, url, cookie, uid) for _ in range(runs)]
        finally:
            browser.close()
    floor = _http_floor(url, cookie, uid, n_slices)
    return _rows(measured, floor, n_slices)


def _rows(
    runs: list[_Run], floor: tuple[float, float, float], n_slices: int
) -> list[dict[str, Any]]:
    http_first, http_seq, http_par = floor
    names = ["what", "value", "unit", "baseline (httpx)", "ratio", "goal"]
    rows: list[tuple[str, float, str, float | None, str | None]] = []
    for name in PLANES:
        first = statistics.median(r.first_image_ms[name] for r in runs)
        rows += [
            (
                f"{name}: first image, first open after start",
                runs[0].first_image_ms[name],
                "ms",
                http_first,
                None,
            ),
            (
                f"{name}: first image, median of {len(runs)} opens",
                first,
                "ms",
                http_first,
                "≤ 1000 ms",
            ),
            (
                f"{name}: scrolling every image, median",
                statistics.median(r.images_per_s[name] for r in runs),
                "images/s",
                http_par,
                "≥ 20 images/s",
            ),
            (
                f"{name}: 10 mm MIP slab image displayed, median",
                statistics.median(r.mip_ms[name] for r in runs),
                "ms",
                None,
                "≤ 150 ms",
            ),
        ]
    rows.append((f"httpx {n_slices} axial slices one at a time", http_seq, "slices/s", None, None))
    out = []
    for what, value, unit, baseline, goal in rows:
        ratio = value / baseline if baseline else ""
        values = (what, value, unit, baseline or "", ratio, goal or "")
        out.append(dict(zip(names, values, strict=True)))
    out.append({"what": f"load average (1 min) at end: {os.getloadavg()[0]:.2f}"})
    return out


#: What a radiologist asks the worklist for: the query parameters of one page.
WORKLIST_QUERIES = {
    "default (most suspicious first)": {},
    "sorted by patient name": {"sort": "patient_name"},
    "sorted by study date, newest first": {"sort": "study_date", "order": "desc"},
    "status new": {"status": "new"},
    "AI label suspected, sorted by date": {"label": "tumour_suspected", "sort": "study_date"},
    "study dates in one week": {"date_from": "2026-03-02", "date_to": "2026-03-08"},
    "search by patient ID prefix": {"q": "P00012"},
    "search by name prefix": {"q": "haddad am"},
    "one patient's studies": {"patient_id": "P000123"},
    "page 100 (offset 4950)": {"offset": "4950"},
}
WORKLIST_REPEATS = 15
BUSY, QUIET = "Busy Hospital", "Quiet Hospital"


def _worklist_timings(url: str, cookie: str, params: dict[str, str]) -> list[float]:
    """Milliseconds of ``WORKLIST_REPEATS`` requests for one page (after one warm-up)."""
    with httpx.Client(base_url=url, cookies={COOKIE_NAME: cookie}, timeout=60) as http:
        http.get("/ui/api/worklist", params=params).raise_for_status()
        times = []
        for _ in range(WORKLIST_REPEATS):
            start = time.perf_counter()
            http.get("/ui/api/worklist", params=params).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return times


def _seeded_service(root: Path, database_url: str, n_studies: int) -> dict[str, str]:
    """The environment of a service whose database holds ``n_studies`` studies of ``BUSY``
    and 50 of ``QUIET``, each with a radiologist ``amina``."""
    env = _service_env(root) | {
        "BASIRA_UI_INSECURE_COOKIES": "true",
        "BASIRA_UI_LOGIN_PER_MINUTE": "1000",
    }
    if database_url:
        env["BASIRA_DATABASE_URL"] = database_url
    db = Database(database_url or f"sqlite:///{root / 'basira.db'}")
    db.create_schema()
    for name, n in ((BUSY, n_studies), (QUIET, 50)):
        _tenant_key(env, name)
        with db.session() as session:
            tenant_id = get_tenant(session, name).id
        seed_worklist(db, tenant_id, n)
        _radiologist(env, name)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    db.dispose()
    return env


def _worklist_rows(
    root: Path, database: str, database_url: str, n_studies: int
) -> list[dict[str, Any]]:
    env = _seeded_service(root, database_url, n_studies)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    rows = []
    with _Server([BASIRA, "serve", "--port", str(port)], env, f"{url}/healthz"):
        busy, quiet = _session_cookie(url, BUSY), _session_cookie(url, QUIET)
        for what, params in WORKLIST_QUERIES.items():
            measured = _worklist_timings(url, busy, params)
            baseline = statistics.median(_worklist_timings(url, quiet, params))
            median = statistics.median(measured)
            rows.append(
                {
                    "what": f"{database}, {n_studies} studies: {what}",
                    "value": median,
                    "unit": "ms",
                    "slowest": max(measured),
                    "baseline (50 studies)": baseline,
                    "ratio": median / baseline,
                    "goal": "≤ 300 ms",
                }
            )
    return rows


def run_worklist(quick: bool = False) -> list[dict[str, Any]]:
    """The worklist on SQLite and (when one answers) PostgreSQL, as table rows."""
    n_studies = 1_000 if quick else 10_000
    rows = []
    with tempfile.TemporaryDirectory(prefix="basira-bench-worklist-") as tmp:
        rows += _worklist_rows(Path(tmp) / "sqlite", "SQLite", "", n_studies)
        base_url = postgres_base_url()
        if base_url is None:
            rows.append({"what": "PostgreSQL: none answers, not measured"})
        else:
            with private_schema(base_url) as url:
                rows += _worklist_rows(Path(tmp) / "postgres", "PostgreSQL", url, n_studies)
    rows.append({"what": f"load average (1 min) at end: {os.getloadavg()[0]:.2f}"})
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The viewer's rows then the worklist's (``quick``: a 40×128×128 series, two runs;
    1,000 studies)."""
    return [*run_viewer(quick), *run_worklist(quick)]


def run_viewer(quick: bool = False) -> list[dict[str, Any]]:
    """Measure the viewer and return the table rows (``quick``: a 40×128×128 series, two
    runs)."""
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
            _radiologist(env, HOSPITAL)
            rows = _measure(url, uid, shape[0], runs=2 if quick else 4)
    return [*rows, {"what": f"analysis by the shipped model before measuring: {analysis}"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small series (smoke test)")
    parser.add_argument("--worklist-only", action="store_true", help="only the worklist part")
    args = parser.parse_args()
    if not args.worklist_only:
        print_table("Review viewer: first image and scrolling", run_viewer(quick=args.quick))
    print_table("Worklist: one page of 50 rows over HTTP", run_worklist(quick=args.quick))


if __name__ == "__main__":
    main()
