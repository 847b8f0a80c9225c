"""The result JSON contract: the published schema is the model's, and the model refuses a result
whose status contradicts its content (a score for a study that was not analysed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipelines.result import (
    SCHEMA_VERSION,
    StudyResult,
    result_json_schema,
    schema_text,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "result.schema.json"
MODEL = {"name": "lung-nodule-unet", "version": "0.1.0", "onnx_sha256": "a" * 64}


def _completed() -> dict:
    return {
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4",
        "status": "completed",
        "model": MODEL,
        "diagnosis": {"label": "tumour_suspected", "probability": 0.8, "operating_point": 0.4},
        "findings": [
            {
                "id": 1,
                "center_lps_mm": [1.0, 2.0, 3.0],
                "center_ijk": [10.5, 11.0, 12.2],
                "diameter_mm": 6.0,
                "volume_ml": 0.11,
                "confidence": 0.7,
                "referenced_sop_instance_uid": "1.2.3.4.5",
            }
        ],
        "timings_ms": {"read": 12.0, "total": 40.0},
    }


def test_committed_schema_equals_the_generated_one():
    """Regenerate with: python -m pipelines.result docs/schemas/result.schema.json"""
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text()


def test_schema_carries_the_contract_fields_and_version():
    schema = result_json_schema()
    required = set(schema["required"])
    assert {"schema_version", "study_instance_uid", "series_instance_uid", "status"} <= required
    assert {"reasons", "model", "diagnosis", "findings", "timings_ms"} <= required
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_completed_result_round_trips_and_validates_against_the_committed_schema():
    result = StudyResult.model_validate(_completed())
    data = json.loads(result.to_json())
    assert data["schema_version"] == SCHEMA_VERSION
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema_errors(data, schema, schema) == []
    assert StudyResult.model_validate(data) == result


def test_schema_check_rejects_a_wrong_result():
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    data = json.loads(StudyResult.model_validate(_completed()).to_json())
    data["status"] = "done"
    data["findings"][0]["confidence"] = 1.5
    del data["model"]["onnx_sha256"]
    errors = schema_errors(data, schema, schema)
    assert len(errors) == 3


def test_not_analysable_result_with_a_score_is_refused():
    data = _completed() | {"status": "not_analysable", "reasons": [{"code": "x.y", "message": ""}]}
    with pytest.raises(ValidationError, match="neither diagnosis nor findings"):
        StudyResult.model_validate(data)


def test_not_analysable_result_without_reasons_is_refused():
    data = _completed() | {"status": "not_analysable", "diagnosis": None, "findings": []}
    with pytest.raises(ValidationError):
        StudyResult.model_validate(data)


def test_completed_result_without_diagnosis_is_refused():
    with pytest.raises(ValidationError, match="completed study has a diagnosis"):
        StudyResult.model_validate(_completed() | {"diagnosis": None})


# --- a JSON Schema (2020-12) checker for the subset pydantic emits: no jsonschema dependency ---

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_errors(
    value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "$"
) -> list[str]:
    """Every violation of ``schema`` by ``value`` (empty when valid)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return schema_errors(value, root["$defs"][name], root, at)
    if "anyOf" in schema:
        options = [schema_errors(value, option, root, at) for option in schema["anyOf"]]
        return [] if any(not errors for errors in options) else [f"{at}: matches no anyOf"]
    kind = schema.get("type")
    if kind is not None:
        is_bool = isinstance(value, bool) and kind in {"number", "integer"}
        if not isinstance(value, _TYPES[kind]) or is_bool:
            return [f"{at}: {value!r} is not {kind}"]
    errors = _scalar_errors(value, schema, at)
    if isinstance(value, dict):
        errors += _object_errors(value, schema, root, at)
    if isinstance(value, list):
        errors += _array_errors(value, schema, root, at)
    return errors


def _scalar_errors(value: Any, schema: dict[str, Any], at: str) -> list[str]:
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{at}: {value!r} != {schema['const']!r}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{at}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{at}: {value} > {schema['maximum']}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{at}: shorter than {schema['minLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{at}: does not match {schema['pattern']}")
    return errors


def _object_errors(value: dict, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    properties = schema.get("properties", {})
    errors = [f"{at}: missing {name}" for name in schema.get("required", []) if name not in value]
    for name, item in value.items():
        if name in properties:
            errors += schema_errors(item, properties[name], root, f"{at}.{name}")
        elif schema.get("additionalProperties") is False:
            errors.append(f"{at}: unexpected {name}")
        elif isinstance(schema.get("additionalProperties"), dict):
            errors += schema_errors(item, schema["additionalProperties"], root, f"{at}.{name}")
    return errors


def _array_errors(value: list, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    errors = []
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{at}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{at}: more than {schema['maxItems']} items")
    prefix = schema.get("prefixItems", [])
    for n, item in enumerate(value):
        sub = prefix[n] if n < len(prefix) else schema.get("items")
        if sub:
            errors += schema_errors(item, sub, root, f"{at}[{n}]")
    return errors
