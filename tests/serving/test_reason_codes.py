"""The ledger that checks every reason the suite produces against docs/errors.md: it finds codes
where users meet them, and it is live during the tests (tests/conftest.py fails the session on an
undocumented one)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests import reason_ledger


def test_codes_are_found_wherever_a_user_meets_them():
    body = {
        "code": "upload.nothing_accepted",
        "message": "…",
        "detail": {"rejected_files": [{"path": "a", "code": "dicom.not_dicom", "message": "…"}]},
    }
    result = {
        "reasons": [],
        "withheld": [{"code": "output.invalid", "message": "…", "output": "sr"}],
        "findings": [{"code": {"coding": []}}],  # a FHIR-like code without a message: not ours
    }
    assert reason_ledger.codes_in_json(body) == {"upload.nothing_accepted", "dicom.not_dicom"}
    assert reason_ledger.codes_in_json(result) == {"output.invalid"}
    assert reason_ledger.codes_in_text("error[input.no_dicom]: Nothing readable") == {
        "input.no_dicom"
    }
    assert reason_ledger.codes_in_text("1.2.3: failed [predict.failed] The analysis…") == {
        "predict.failed"
    }
    assert reason_ledger.codes_in_text('299 basira "part-3: dicom.not_dicom"') == {
        "dicom.not_dicom"
    }


def test_an_undocumented_code_is_reported_with_the_test_that_produced_it():
    errors_md = reason_ledger.ERRORS_MD.read_text(encoding="utf-8")
    documented = reason_ledger.documented_codes(errors_md)
    assert {"predict.failed", "output.finding_not_representable", "job.retries_exhausted"} <= (
        documented
    )
    ledger = {"predict.failed": "t::a", "predict.exploded": "t::b"}
    assert reason_ledger.undocumented(ledger, errors_md) == {"predict.exploded": "t::b"}


def test_the_ledger_records_what_the_api_answers_during_the_tests(client: TestClient, request):
    first = reason_ledger.LEDGER.pop("auth.missing_key", None)  # seen earlier: re-recorded here
    assert client.get("/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 401
    assert reason_ledger.LEDGER["auth.missing_key"] == request.node.nodeid
    if first is not None:
        reason_ledger.LEDGER["auth.missing_key"] = first
