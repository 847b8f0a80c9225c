"""The error contract: unique stable codes, and every code triggered by at least one test."""

from __future__ import annotations

from pathlib import Path

from pipelines.errors import BasiraError, all_error_classes

TESTS = Path(__file__).resolve().parents[1]


def test_codes_are_unique_and_namespaced():
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes))
    assert all("." in code for code in codes)


def test_every_concrete_error_code_is_exercised_by_a_test():
    """A leaf error class whose code no test mentions is a refusal nobody has seen work."""
    corpus = "\n".join(
        p.read_text(encoding="utf-8")
        for p in TESTS.rglob("test_*.py")
        if p.name != "test_errors.py"
    )
    leaves = [cls for cls in all_error_classes() if not cls.__subclasses__()]
    untested = sorted(
        cls.code for cls in leaves if cls.code not in corpus and cls.__name__ not in corpus
    )
    assert untested == []


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
