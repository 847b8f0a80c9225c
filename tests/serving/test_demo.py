"""``basira demo`` (what ``make demo`` runs): a real service, a demo hospital and radiologist,
studies submitted through the API, each ending with a result, and a login that works."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import NoDicomFoundError
from serving.db import Database
from serving.demo import HOSPITAL, RADIOLOGIST, DemoConfig, run_demo
from serving.tenants import get_tenant
from serving.ui.accounts import authenticate_user
from tests.pipelines.test_predict import write_study
from tests.serving.conftest import free_port


@pytest.mark.slow
def test_demo_serves_the_studies_it_submits_and_prints_a_working_login(
    tmp_path: Path, service_release: Path
) -> None:
    studies = tmp_path / "studies"
    write_study(studies / "a", "1.2.826.0.1.3680043.8.498.71")
    write_study(studies / "b", "1.2.826.0.1.3680043.8.498.72")
    (studies / "README.txt").write_text("not DICOM: ignored by the index")
    said: list[str] = []
    config = DemoConfig(
        studies_dir=studies,
        data_dir=tmp_path / "service",
        model_dir=service_release,
        port=free_port(),
        dicom_port=free_port(),
        exit_when_done=True,
    )

    summary = run_demo(config, say=said.append)

    assert sorted(summary.statuses.values()) == ["completed", "completed"]
    text = "\n".join(said)
    assert f"{summary.url}/ui/" in text
    assert summary.password in text
    assert text.count("completed:") == 2
    db = Database(f"sqlite:///{tmp_path / 'service' / 'basira.db'}")
    with db.session() as session:
        tenant = get_tenant(session, HOSPITAL)
        assert authenticate_user(session, tenant.id, RADIOLOGIST, summary.password)
    db.dispose()


def test_demo_without_studies_is_refused_before_anything_starts(
    tmp_path: Path, service_release: Path
) -> None:
    (tmp_path / "empty").mkdir()
    config = DemoConfig(
        studies_dir=tmp_path / "empty", data_dir=tmp_path / "service", model_dir=service_release
    )
    with pytest.raises(NoDicomFoundError):
        run_demo(config, say=lambda _line: None)
    assert not (tmp_path / "service").exists()
