"""The review flow in Debian's Chromium against a real ``basira serve``: sign in, worklist,
viewer (scroll, window/level, overlays), accept, reject with a reason, add a missed finding by
clicking, sign off; the stored feedback is what was clicked; Arabic is right-to-left."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving.conftest import RunningService, free_port, service_env
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
    _shot(page, shots, "viewer-review")
    page.fill("#impression", "Nodule right upper lobe, 9 mm: CT follow-up in 3 months.")
    page.focus("#sign")
    page.keyboard.press("Enter")
    _wait(page, "window.basiraViewer.state.review?.locked === true")
    _shot(page, shots, "viewer-signed")


def test_radiologist_reviews_and_signs_a_study_in_chromium(
    ui_service: RunningService, page: Any, study_files: list[Path], tmp_path: Path
) -> None:
    hospital = ui_service.create_tenant(HOSPITAL)
    study_uid = submit_and_wait(ui_service, hospital, study_files)
    place_two_findings(ui_service, study_files)
    password = _password(ui_service)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    page.goto(f"{ui_service.base_url}/ui/login")
    page.fill("#hospital", HOSPITAL)
    page.fill("#username", "amina")
    page.fill("#password", password)
    _shot(page, shots, "login")
    page.keyboard.press("Enter")
    page.wait_for_selector("#worklist-table tbody tr")
    _shot(page, shots, "worklist")
    page.click(f"a[href='/ui/studies/{study_uid}']")
    page.wait_for_selector("#viewer[data-ready=true]")
    _shot(page, shots, "viewer")
    _view_and_adjust(page, shots)
    _review(page, shots)

    review = page.request.get(f"{ui_service.base_url}/ui/api/studies/{study_uid}/review").json()
    clicked = [(r["action"], r["finding_id"], r["reason"], r["user"]) for r in review["feedback"]]
    assert clicked == [
        ("accept", 1, "", "amina"),
        ("reject", 2, "vessel", "amina"),
        ("add", None, "", "amina"),
    ]
    assert review["locked"] and review["impression"].startswith("Nodule right upper lobe")

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
