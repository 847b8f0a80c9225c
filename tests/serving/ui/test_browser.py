"""The review flow in Debian's Chromium against a real ``basira serve``: sign in, worklist,
viewer (scroll, window/level, overlays), accept, reject with a reason, add a missed finding by
clicking, sign off; the stored feedback is what was clicked; Arabic is right-to-left."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest

from pipelines.dicom.geometry import affine_from_dicom
from pipelines.dicom.read import read_series_volume
from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series
from serving.ui.viewer import hu_int16
from tests.pipelines.test_intended_use import chest_hu
from tests.serving.conftest import RunningService, free_port, multipart_files, service_env
from tests.serving.ui.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    place_two_findings,
    require_chromium,
    submit_and_wait,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"
HOSPITAL = "Hôpital Ibn Sina"


@pytest.fixture
def ui_service(tmp_path: Path, service_release: Path) -> Iterator[RunningService]:
    """``basira serve`` on loopback with plain-HTTP session cookies (the dev setting)."""
    require_chromium()
    port, dicom_port = free_port(), free_port()
    data_dir = tmp_path / "served"
    data_dir.mkdir()
    env = service_env(data_dir, service_release, dicom_port, BASIRA_UI_INSECURE_COOKIES="true")
    service = RunningService(f"http://127.0.0.1:{port}", port, dicom_port, env, data_dir)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-GB")
        yield context.new_page()
        browser.close()


def _password(service: RunningService) -> str:
    done = service.cli("users", "create", HOSPITAL, "amina")
    assert done.returncode == 0, done.stderr
    return next(
        line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("password")
    )


def _shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"ui-{name}.png"))


def _sign_in(page: Any, service: RunningService, password: str, shots: Path | None = None) -> None:
    """Sign in as the radiologist and wait for the worklist (``shots``: keep the filled form)."""
    page.goto(f"{service.base_url}/ui/login")
    page.fill("#hospital", HOSPITAL)
    page.fill("#username", "amina")
    page.fill("#password", password)
    if shots is not None:
        _shot(page, shots, "login")
    page.keyboard.press("Enter")
    page.wait_for_selector("#worklist-table tbody tr")


def _wait(page: Any, expression: str, timeout_s: float = 15.0) -> None:
    """Poll a page expression until true (``wait_for_function`` evaluates strings with
    ``eval``, which the UI's CSP rightly forbids; ``evaluate`` goes through the debugger)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.05)


def _k(page: Any) -> int:
    return int(page.evaluate("window.basiraViewer.state.k"))


def _view_and_adjust(page: Any, shots: Path) -> None:
    """Scroll by wheel and keys, set W/L by preset and drag, toggle overlays."""
    canvas = page.locator("canvas#image")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    start = _k(page)
    page.mouse.wheel(0, 120)
    _wait(page, f"window.basiraViewer.state.k === {start + 1}")
    canvas.focus()
    for _ in range(3):
        page.keyboard.press("ArrowUp")
    _wait(page, f"window.basiraViewer.state.k === {start - 2}")
    page.keyboard.press("2")  # mediastinum preset by keyboard
    assert page.evaluate("[window.basiraViewer.state.width, window.basiraViewer.state.level]") == [
        350,
        40,
    ]
    page.click("[data-preset=lung]")
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 260, box["y"] + 230, steps=5)
    page.mouse.up()
    assert page.evaluate("window.basiraViewer.state.width") > 1500
    page.click("[data-preset=lung]")
    page.locator("#findings-list li[data-finding-id='1'] .jump").click()
    page.check("#toggle-heat")
    assert page.is_visible("#heat-note")
    _shot(page, shots, "viewer-heat")
    page.uncheck("#toggle-heat")
    page.keyboard.press("f")
    assert page.evaluate("window.basiraViewer.state.showFindings") is False
    page.keyboard.press("f")


def _review(page: Any, shots: Path) -> None:
    """Accept finding 1, reject finding 2 (vessel), add one by clicking, sign off."""
    page.locator("#findings-list li[data-finding-id='1'] [data-action=accept]").click()
    page.wait_for_selector("#findings-list li[data-finding-id='1'][data-verdict=accept]")
    page.locator("#findings-list li[data-finding-id='2'] [data-action=reject]").click()
    page.select_option("#reject-reason", "vessel")
    page.click("#reject-confirm")
    page.wait_for_selector("#findings-list li[data-finding-id='2'][data-verdict=reject]")
    page.locator("canvas#image").focus()
    page.keyboard.press("a")  # add mode by keyboard, then click the missed nodule
    box = page.locator("canvas#image").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    _wait(page, "(window.basiraViewer.state.review?.feedback ?? []).some(r => r.action === 'add')")
    _measure_and_apply(page, shots)
    _shot(page, shots, "viewer-review")
    page.fill("#impression", "Nodule right upper lobe, 9 mm: CT follow-up in 3 months.")
    page.focus("#sign")
    page.keyboard.press("Enter")
    _wait(page, "window.basiraViewer.state.review?.locked === true")
    _shot(page, shots, "viewer-signed")


def _use_worklist(page: Any) -> None:
    """A column header sorts (a second click reverses); the patient ID lists that patient's
    studies until *All patients*."""
    header = "th:has(button.sort[data-sort=patient_name])"
    page.click("button.sort[data-sort=patient_name]")
    page.wait_for_selector(f"{header}[aria-sort=ascending]")
    page.click("button.sort[data-sort=patient_name]")
    page.wait_for_selector(f"{header}[aria-sort=descending]")
    row = page.locator("#worklist-table tbody tr").first
    assert row.locator("td").nth(1).text_content() == "ANON"  # the series' PatientID
    row.locator("button.patient").click()
    page.wait_for_selector("#patient-chip:not([hidden])")
    assert "ANON" in (page.text_content("#patient-chip-text") or "")
    assert page.locator("#worklist-table tbody tr").count() == 1
    page.click("#patient-clear")
    page.wait_for_selector("#patient-chip", state="hidden")
    page.click("#sort-suspicion")
    page.wait_for_selector(f"{header}[aria-sort=none]")


def _measure_and_apply(page: Any, shots: Path) -> None:
    """Measure finding 1 with the caliper (D) on the axial image and apply the length to it as
    its corrected diameter."""
    page.locator("canvas#image").focus()
    page.keyboard.press("d")
    box = page.locator("canvas#image").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + box["height"] * 0.45)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.46, box["y"] + box["height"] * 0.48, steps=4)
    page.mouse.up()
    page.keyboard.press("Escape")
    item = page.locator("#measurements li").first
    measured = page.evaluate(
        "window.basiraViewer.caliperMm(window.basiraViewer.state.measurements[0])"
    )
    assert 1 < measured < 200
    _shot(page, shots, "viewer-measure")
    item.locator("select").select_option("1")
    item.locator("[data-action=apply]").click()
    _wait(
        page, "(window.basiraViewer.state.review?.feedback ?? []).some(r => r.action === 'correct')"
    )
    corrected = page.evaluate(
        "window.basiraViewer.state.review.feedback.find(r => r.action === 'correct').diameter_mm"
    )
    assert corrected == pytest.approx(round(measured, 1))


def _navigate_findings(page: Any) -> None:
    """N and P open the next and previous finding in confidence order (the list's order),
    centred and zoomed in every plane."""
    ids = page.locator("#findings-list li").evaluate_all(
        "(lis) => lis.map(li => li.dataset.findingId)"
    )
    assert ids == ["1", "2"]  # confidence 0.6, then 0.3
    page.locator("canvas#image").focus()
    page.keyboard.press("l")  # three views
    # Finding 1 is open (its list entry was clicked): N goes on to 2, then wraps to 1.
    for key, finding_id in (("n", 2), ("n", 1), ("p", 2)):
        page.keyboard.press(key)
        centre = page.evaluate(
            f"window.basiraViewer.state.meta.findings.find(f => f.id === {finding_id}).center_ijk"
        )
        _wait(
            page,
            f"window.basiraViewer.state.i === {round(centre[0])} && "
            f"window.basiraViewer.state.k === {round(centre[2])}",
        )
        for plane in ("axial", "coronal", "sagittal"):
            placed = page.evaluate(
                f"""(() => {{
                  const v = window.basiraViewer, p = v.planes.{plane}, g = v.fit(p);
                  const [x, y] = p.at({centre});
                  return [g.x0 + (x + 0.5) * g.px - p.canvas.width / 2,
                          g.y0 + (y + 0.5) * g.py - p.canvas.height / 2, p.view.zoom];
                }})()"""
            )
            assert abs(placed[0]) < 1 and abs(placed[1]) < 1 and placed[2] > 1, (plane, placed)
    page.keyboard.press("l")  # back to one view


def test_radiologist_reviews_and_signs_a_study_in_chromium(
    ui_service: RunningService, page: Any, study_files: list[Path], tmp_path: Path
) -> None:
    hospital = ui_service.create_tenant(HOSPITAL)
    study_uid = submit_and_wait(ui_service, hospital, study_files)
    place_two_findings(ui_service, study_files)
    password = _password(ui_service)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    _sign_in(page, ui_service, password, shots)
    _shot(page, shots, "worklist")
    _use_worklist(page)
    page.click(f"a[href='/ui/studies/{study_uid}']")
    page.wait_for_selector("#viewer[data-ready=true]")
    _shot(page, shots, "viewer")
    _view_and_adjust(page, shots)
    _navigate_findings(page)
    _review(page, shots)

    review = page.request.get(f"{ui_service.base_url}/ui/api/studies/{study_uid}/review").json()
    clicked = [(r["action"], r["finding_id"], r["reason"], r["user"]) for r in review["feedback"]]
    assert clicked == [
        ("accept", 1, "", "amina"),
        ("reject", 2, "vessel", "amina"),
        ("add", None, "", "amina"),
        ("correct", 1, "", "amina"),
    ]
    assert review["locked"] and review["impression"].startswith("Nodule right upper lobe")
    caliper_mm = review["feedback"][-1]["diameter_mm"]
    sr = page.request.get(f"{ui_service.base_url}/ui/api/studies/{study_uid}/review/sr")
    assert caliper_mm in _sr_numbers(pydicom.dcmread(io.BytesIO(sr.body())))

    page.select_option("#locale-select", "ar")
    page.click("#locale-form button")
    page.wait_for_selector("html[dir=rtl][lang=ar]")
    page.wait_for_selector("#viewer[data-ready=true]")
    _shot(page, shots, "viewer-ar")
    page.goto(f"{ui_service.base_url}/ui/")
    page.wait_for_selector("#worklist-table tbody tr")
    _shot(page, shots, "worklist-ar")

    assert sorted(p.name for p in shots.glob("ui-*.png")), "no screenshots were saved"
    if os.environ.get("BASIRA_UPDATE_SCREENSHOTS") == "1":  # refresh docs/images on purpose only
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        for shot in sorted(shots.glob("ui-*.png")):
            shutil.copy(shot, DOCS_IMAGES / shot.name)


def _sr_numbers(ds: Any) -> list[float]:
    """Every numeric value of an SR's content tree."""
    found: list[float] = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "NUM":
            found.append(float(item.MeasuredValueSequence[0].NumericValue))
        found += _sr_numbers(item)
    return found


#: The plane test's series: i, j spacing and slice step in mm (non-square pixels, thick
#: slices running towards the head), its shape [k, j, i] and a bright 3-voxel cube's centre.
PLANE_SPACING_MM = (0.7, 0.9, 2.5)
PLANE_SHAPE = (40, 64, 80)
MARKER_IJK = (50, 20, 28)


def _marked_series(out: Path) -> tuple[list[Path], np.ndarray]:
    """A chest-like series with a 3x3x3-voxel cube of 3000 HU around ``MARKER_IJK``."""
    sx, sy, sz = PLANE_SPACING_MM
    affine = affine_from_dicom((1, 0, 0, 0, 1, 0), (sy, sx), (-28.0, -30.0, -50.0), (0, 0, sz))
    hu = chest_hu(PLANE_SHAPE)
    i, j, k = MARKER_IJK
    hu[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2] = 3000
    return write_ct_series(hu, affine, out, CTSeriesInfo(uid_seed="planes")), affine


def _canvas_point(page: Any, plane: str, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image column ``x``, row ``y`` (pixel units) on ``plane``'s canvas."""
    return tuple(
        page.evaluate(
            """([name, x, y]) => {
              const v = window.basiraViewer, plane = v.planes[name], g = v.fit(plane);
              const rect = plane.canvas.getBoundingClientRect();
              const ratio = plane.canvas.width / rect.width;
              return [rect.left + (g.x0 + x * g.px) / ratio, rect.top + (g.y0 + y * g.py) / ratio];
            }""",
            [plane, x, y],
        )
    )


def _wait_hu(page: Any, plane: str, x: int, y: int, expected: int, *, equal: bool = True) -> None:
    """Wait (images load after the cross-hair moves) until the HU that ``plane``'s image shows
    at column ``x``, row ``y`` is ``expected`` (or, ``equal`` false, is something else)."""
    deadline = time.monotonic() + 15
    expression = f"window.basiraViewer.huAt('{plane}', {x}, {y})"
    while (page.evaluate(expression) == expected) != equal:
        assert time.monotonic() < deadline, (plane, x, y, page.evaluate(expression))
        time.sleep(0.1)


def _drag(page: Any, plane: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*_canvas_point(page, plane, *start))
    page.mouse.down()
    page.mouse.move(*_canvas_point(page, plane, *end), steps=6)
    page.mouse.up()


def _measure_in_coronal(page: Any, shots: Path, affine: np.ndarray, files: list[Path]) -> None:
    """The caliper reads back the true distance between two voxel centres (0.7 mm pixels
    across, 2.5 mm slices down) within 0.5 mm; an ellipse ROI's area, mean and SD are those
    of the series' HU inside it."""
    page.click("[data-plane=coronal]")
    page.keyboard.press("l")  # one view: the coronal plane alone
    _wait(page, "window.basiraViewer.state.layout === 'one'")
    j = _state(page, "state.j")
    ends = [(10, j, 5), (60, j, 35)]
    points = [_state(page, f"planes.coronal.at({list(ijk)})") for ijk in ends]
    page.locator("canvas#image-coronal").focus()
    page.keyboard.press("d")
    _drag(
        page,
        "coronal",
        (points[0][0] + 0.5, points[0][1] + 0.5),
        (points[1][0] + 0.5, points[1][1] + 0.5),
    )
    lps = [affine @ np.array([*ijk, 1.0]) for ijk in ends]
    true_mm = float(np.linalg.norm(lps[0][:3] - lps[1][:3]))
    shown = page.locator("#measurements li .value").first.text_content() or ""
    read_mm = float(shown.rsplit(":", 1)[1].split("mm")[0].replace(",", "").strip())
    assert abs(read_mm - true_mm) <= 0.5, (shown, true_mm)
    _shot(page, shots, "viewer-caliper")

    page.keyboard.press("e")
    _drag(page, "coronal", (20.0, 8.0), (44.0, 20.0))
    page.keyboard.press("Escape")
    roi = page.evaluate("window.basiraViewer.state.measurements.at(-1)")
    stats = page.evaluate(
        "window.basiraViewer.roiStats(window.basiraViewer.state.measurements.at(-1))"
    )
    # The coronal image as drawn: the series' plane at j, head (the last slice) up.
    image = hu_int16(read_series_volume(files).array_hu)[::-1, j, :]
    cx, cy = (roi["x0"] + roi["x1"]) / 2, (roi["y0"] + roi["y1"]) / 2
    rx, ry = abs(roi["x1"] - roi["x0"]) / 2, abs(roi["y1"] - roi["y0"]) / 2
    y, x = np.mgrid[0 : PLANE_SHAPE[0], 0 : PLANE_SHAPE[2]]
    inside = image[((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 <= 1]
    sx, _, sz = PLANE_SPACING_MM
    assert stats["n"] == inside.size > 20
    assert stats["mean"] == pytest.approx(inside.mean())
    assert stats["sd"] == pytest.approx(inside.std(ddof=1))
    assert stats["areaMm2"] == pytest.approx(np.pi * rx * sx * ry * sz)


def _state(page: Any, expression: str) -> Any:
    return page.evaluate(f"window.basiraViewer.{expression}")


def test_three_planes_share_a_crosshair_in_true_proportions_and_show_a_mip_slab(
    ui_service: RunningService, page: Any, tmp_path: Path
) -> None:
    """Three views of a series with non-square pixels and 2.5 mm slices: a click on a bright
    marker in the axial plane puts the cross-hair on it in every plane (the pixel under the
    cross-hair is the marker's, and its LPS point is the marker's within one voxel); a click
    in the coronal plane moves the others; each plane is drawn in millimetres; a 10 mm MIP
    slab shows the marker from a slice that misses it."""
    hospital = ui_service.create_tenant(HOSPITAL)
    files, affine = _marked_series(tmp_path / "marked")
    response = httpx.post(
        f"{ui_service.base_url}/v1/studies",
        files=multipart_files(files),
        headers=hospital.headers,
        timeout=120,
    )
    assert response.status_code == 202, response.text
    study_uid = response.json()["study_instance_uid"]
    password = _password(ui_service)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    _sign_in(page, ui_service, password)
    page.goto(f"{ui_service.base_url}/ui/studies/{study_uid}")
    page.wait_for_selector("#viewer[data-ready=true]")
    page.keyboard.press("l")
    _wait(page, "Object.keys(window.basiraViewer.stats.firstImageMsByPlane).length === 3")
    page.keyboard.press("2")  # mediastinum: soft tissue grey, the marker white

    sx, sy, sz = PLANE_SPACING_MM
    for plane, (px, py) in {"axial": (sx, sy), "coronal": (sx, sz), "sagittal": (sy, sz)}.items():
        geometry = _state(page, f"planes.{plane}")
        assert (geometry["px"], geometry["py"]) == pytest.approx((px, py))
        drawn = page.evaluate(f"window.basiraViewer.fit(window.basiraViewer.planes.{plane})")
        assert drawn["py"] / drawn["px"] == pytest.approx(py / px)

    for plane in ("coronal", "sagittal"):  # head up: the top row is the most superior (LPS +z)
        top, bottom = (
            _state(page, f"toLps(...window.basiraViewer.planes.{plane}.voxel(0, {row}, 0))")[2]
            for row in (0, PLANE_SHAPE[0] - 1)
        )
        assert top > bottom, plane

    i, j, k = MARKER_IJK
    page.evaluate(f"window.basiraViewer.goTo({k})")
    _wait(page, f"window.basiraViewer.state.k === {k}")
    page.mouse.click(*_canvas_point(page, "axial", i + 0.5, j + 0.5))
    _wait(page, f"window.basiraViewer.state.i === {i} && window.basiraViewer.state.j === {j}")
    assert _state(page, "state.k") == k
    lps = _state(page, f"toLps({i}, {j}, {k})")
    expected = affine @ np.array([i, j, k, 1.0])
    assert np.abs(np.array(lps) - expected[:3]).max() < min(PLANE_SPACING_MM)
    for plane in ("axial", "coronal", "sagittal"):
        x, y = _state(page, f"planes.{plane}.at([{i}, {j}, {k}])")
        _wait_hu(page, plane, x, y, 3000)  # the marker under the cross-hair in every plane
        assert _state(page, f"huAt('{plane}', {x + 3}, {y + 3})") != 3000, plane
    _shot(page, shots, "viewer-three-planes")

    coronal_x, coronal_y = _state(page, "planes.coronal.at([30, 0, 10])")
    page.mouse.click(*_canvas_point(page, "coronal", coronal_x + 0.5, coronal_y + 0.5))
    _wait(page, "window.basiraViewer.state.i === 30")
    assert (_state(page, "state.j"), _state(page, "state.k")) == (j, 10)

    page.evaluate(f"window.basiraViewer.moveCrosshair({i}, {j}, {k - 2})")
    _wait(page, f"window.basiraViewer.state.k === {k - 2}")
    _wait_hu(page, "axial", i, j, 3000, equal=False)  # 2 slices (5 mm) below the cube
    page.select_option("#slab", "10")
    _wait(page, "window.basiraViewer.state.slab === 10")
    _wait_hu(page, "axial", i, j, 3000)  # the 10 mm slab reaches it
    _shot(page, shots, "viewer-mip-slab")
    page.select_option("#slab", "0")
    _measure_in_coronal(page, shots, affine, files)

    if os.environ.get("BASIRA_UPDATE_SCREENSHOTS") == "1":
        for shot in sorted(shots.glob("ui-*.png")):
            shutil.copy(shot, DOCS_IMAGES / shot.name)
