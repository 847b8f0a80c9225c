"""Every coded reason the test suite produces, checked against ``docs/errors.md``.

Reasons reach people through a few doors, and the ledger watches each of them while the tests
run (call-through observers; nothing is replaced):

* HTTP, both ways: every JSON body an ``httpx`` client sends or receives (the API through
  ``TestClient`` and real servers, the result JSON, job records, webhook notices the worker
  posts) and every ``Warning`` header (STOW-RS failures);
* result files: ``StudyResult.to_json`` (what ``basira predict`` writes and a job keeps);
* the CLI: every line ``typer.echo`` prints with an ``error[code]`` or ``[code]`` in it.

A code is any ``"code"`` of a JSON object that also has a ``"message"`` (error bodies, reasons,
withheld items, rejected files), wherever it is nested. :func:`undocumented` lists the codes
that ``docs/errors.md`` does not name; ``tests/conftest.py`` fails the session on any.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "ERRORS_MD",
    "LEDGER",
    "codes_in_json",
    "codes_in_text",
    "documented_codes",
    "install",
    "record",
    "undocumented",
]

ERRORS_MD = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
#: code -> the test that first produced it.
LEDGER: dict[str, str] = {}
CURRENT_TEST = [""]
_CODE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_IN_TEXT = re.compile(r"\[([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)\]")
_IN_WARNING = re.compile(r'299 basira "[^"]*?: ([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)"')


def record(codes: Iterable[str]) -> None:
    for code in codes:
        LEDGER.setdefault(code, CURRENT_TEST[0] or "<outside a test>")


def codes_in_json(value: Any) -> set[str]:
    """The codes of every ``{"code", "message", ...}`` object nested in ``value``."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            code = item.get("code")
            if isinstance(code, str) and isinstance(item.get("message"), str):
                found.add(code)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def codes_in_text(text: str) -> set[str]:
    """Codes printed by the CLI (``error[code]: …``, ``… [code] …``) or sent in a STOW-RS
    ``Warning`` header."""
    return set(_IN_TEXT.findall(text)) | set(_IN_WARNING.findall(text))


def documented_codes(text: str) -> set[str]:
    """Every code ``docs/errors.md`` names in its table."""
    return set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE))


def undocumented(ledger: dict[str, str], errors_md: str) -> dict[str, str]:
    documented = documented_codes(errors_md)
    return {code: test for code, test in sorted(ledger.items()) if code not in documented}


def _json_codes(content: bytes, content_type: str) -> set[str]:
    if "json" not in content_type or not content:
        return set()
    try:
        return codes_in_json(json.loads(content))
    except ValueError:
        return set()


def _observe_httpx() -> None:
    import httpx

    send = httpx.Client.send

    def observed_send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> Any:
        if isinstance(request.stream, httpx.ByteStream):
            record(_json_codes(request.content, request.headers.get("content-type", "")))
        response = send(self, request, **kwargs)
        for warning in response.headers.get_list("warning"):
            record(codes_in_text(warning))
        if not kwargs.get("stream"):
            record(_json_codes(response.content, response.headers.get("content-type", "")))
        return response

    httpx.Client.send = observed_send  # type: ignore[method-assign]


def _observe_results() -> None:
    from pipelines.result import StudyResult

    to_json = StudyResult.to_json

    def observed_to_json(self: StudyResult) -> str:
        text = to_json(self)
        record(codes_in_json(json.loads(text)))
        return text

    StudyResult.to_json = observed_to_json  # type: ignore[method-assign]


def _observe_cli() -> None:
    import typer

    echo: Callable[..., None] = typer.echo

    def observed_echo(message: Any = None, *args: Any, **kwargs: Any) -> None:
        if isinstance(message, str):
            record(codes_in_text(message))
        echo(message, *args, **kwargs)

    typer.echo = observed_echo


def install() -> None:
    """Start watching (once per process)."""
    if getattr(install, "done", False):
        return
    _observe_httpx()
    _observe_results()
    _observe_cli()
    install.done = True  # type: ignore[attr-defined]
