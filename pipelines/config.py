"""One way to read a configuration file: YAML (or JSON) into a pydantic model, with one wording
for every refusal.

A missing file is ``input.not_found``; a file that does not parse, lacks the asked-for section,
or holds a field that does not validate is ``config.invalid``, whose message names the file and
the first bad field (``training.lr: Input should be greater than 0``) and whose detail carries
``path`` and ``field``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.errors import ConfigError, InputNotFoundError

Model = TypeVar("Model", bound=BaseModel)


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of ``path`` (``None`` for an empty file); ``what`` names the file in the
    not-found message ("Bundle file", "Params file").

    Raises:
        InputNotFoundError: ``path`` does not exist.
        ConfigError: it is not valid YAML.
    """
    if not path.is_file():
        raise InputNotFoundError(f"{what} {path} does not exist.", path=str(path))
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", path=str(path)) from exc


def load_config(
    path: Path,
    model: type[Model],
    *,
    what: str,
    section: str | None = None,
    top_level_ok: bool = False,
) -> Model:
    """``path`` read as ``model``: the whole file, or its dotted ``section`` (``prepare``,
    ``evaluate.findings``). With ``top_level_ok`` a file without the section is read whole (a
    config file of its own rather than ``params.yaml``). An empty file or section gives the
    model's defaults.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        ConfigError: invalid YAML, a missing section, or a field that does not validate.
    """
    data = read_yaml(path, what)
    if section is not None:
        found = _section(data, section)
        if found is None and not top_level_ok:
            raise ConfigError(f"{path} has no '{section}' section.", path=str(path))
        data = data if found is None else found
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of {model.__name__} fields.", path=str(path))
    return validate_config(data or {}, model, path)


def validate_config(data: Any, model: type[Model], path: Path) -> Model:
    """``data`` (parsed YAML, or JSON text) validated as ``model``.

    Raises:
        ConfigError: naming ``path`` and the first field that does not validate.
    """
    try:
        if isinstance(data, str):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(
            f"{path}: {where}: {first['msg']}",
            path=str(path),
            field=where,
            errors=exc.error_count(),
        ) from exc


def _section(data: Any, section: str) -> Any:
    """The dotted ``section`` of ``data``, or None when it has none."""
    for key in section.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return {} if data is None else data
