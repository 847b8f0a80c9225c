"""The error contract: unique stable codes, and every code raised or observed by at least one
test.

The library's classes and the service's (:mod:`serving.errors`, imported here so that
:func:`~pipelines.errors.all_error_classes` sees them) form one hierarchy and one contract.
"""

from __future__ import annotations

from pathlib import Path

import serving.errors  # noqa: F401 - the service's classes join all_error_classes()
from pipelines.errors import BasiraError, all_error_classes
from tests.error_evidence import observed_errors

TESTS = Path(__file__).resolve().parents[1]
#: Tests of the code machinery itself, which handle codes as data (sample bodies, ledgers,
#: these checks' own examples): what they compare proves nothing about a refusal.
MACHINERY = frozenset({"test_errors.py", "test_reason_codes.py"})
SAMPLE_CLASSES = {"NotCTError", "GantryTiltError", "UploadRefusedError"}


def test_codes_are_unique_and_namespaced():
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes))
    assert all("." in code for code in codes)


def test_the_service_errors_are_in_the_one_hierarchy():
    names = {cls.__name__ for cls in all_error_classes()}
    assert {"LoginFailedError", "StudyNotFoundError", "SliceOutOfRangeError"} <= names
    assert len(names) == len(all_error_classes())  # class names are unique too


def test_every_concrete_error_code_is_raised_or_observed_by_a_test():
    """A leaf error class that no test expects with ``pytest.raises`` and whose code no test
    compares (tests/error_evidence.py says what counts) is a refusal nobody has seen work."""
    sources = [
        path.read_text(encoding="utf-8")
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in MACHINERY
    ]
    classes = all_error_classes()
    seen = observed_errors(sources, {cls.__name__ for cls in classes})
    leaves = [cls for cls in classes if not cls.__subclasses__()]
    unobserved = sorted(
        cls.code
        for cls in leaves
        if cls.code not in seen.codes and cls.__name__ not in seen.classes
    )
    assert unobserved == []


def _seen(source: str) -> set[str]:
    found = observed_errors([source], SAMPLE_CLASSES)
    return found.codes | found.classes


def test_a_raised_or_compared_error_is_evidence():
    source = """
import pytest
from pipelines import errors
from pipelines.errors import GantryTiltError

def test_a():
    with pytest.raises((errors.NotCTError, ValueError)):
        read()
    with pytest.raises(GantryTiltError, match="tilt"):
        read()

def test_b(client):
    body = client.get("/").json()
    assert body["code"] == "alpha.one"
    assert run().startswith("error[alpha.two]: ")
    assert "error[alpha.three]" in out and [r.code for r in rs] == [UploadRefusedError.code]
"""
    assert _seen(source) == {
        "NotCTError",
        "GantryTiltError",
        "UploadRefusedError",
        "alpha.one",
        "alpha.two",
        "alpha.three",
    }


def test_a_code_that_reaches_a_comparison_is_evidence():
    source = """
import pytest

CASES = [("a.dcm", "beta.table"), pytest.param("b.dcm", "beta.param", id="b")]

def refused(response, status, code):
    assert response.status_code == status and response.json()["code"] == code

def assert_line(done, code):
    assert done.stderr.startswith(f"error[{code}]: ")

def check(response, code):
    refused(response, 422, code)

@pytest.mark.parametrize(("name", "code"), CASES)
def test_table(name, code):
    assert read(name).code == code

@pytest.mark.parametrize("error", [NotCTError])
def test_classes(error):
    with pytest.raises(error):
        read()

def test_helpers(client):
    check(client.post("/"), "beta.helper")
    for code, args in {"beta.loop": ("create",)}.items():
        assert_line(run(*args), code)
    expected = "beta.local"
    assert status() == expected
"""
    assert _seen(source) == {
        "beta.table",
        "beta.param",
        "beta.helper",
        "beta.loop",
        "beta.local",
        "NotCTError",
    }


def test_a_mere_mention_is_not_evidence():
    source = '''
"""Refusals such as gamma.docstring and GantryTiltError."""
import pytest

# gamma.comment: NotCTError
NAMES = {"gamma.unused": 1}

def send(client, code):
    client.post("/", json={"code": code})

@pytest.mark.parametrize(("path", "label"), [("x", "gamma.input")])
def test_a(client, path, label):
    """Sends gamma.sent; checks only the status."""
    send(client, "gamma.sent")
    response = client.post(path, json={"code": "gamma.body", "label": label})
    assert response.status_code == 422
    print("gamma.printed", UploadRefusedError)
    assert issubclass(GantryTiltError, Exception)
'''
    assert _seen(source) == set()


def test_error_body_is_code_message_detail():
    error = BasiraError("Something precise.", path="a.dcm")
    assert error.to_dict() == {
        "code": "basira.error",
        "message": "Something precise.",
        "detail": {"path": "a.dcm"},
    }


def test_every_code_is_documented():
    documented = (TESTS.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [cls.code for cls in all_error_classes() if f"`{cls.code}`" not in documented]
    assert missing == []
