"""Message catalogs of the review UI (``i18n/<locale>.json``): English, French and Arabic.

Templates translate with ``t(key)``; the browser gets the whole catalog of the page's locale as
JSON data. A key missing in a catalog falls back to English at run time, and a test fails on it.
Dates and numbers are not formatted here: the browser's ``Intl`` APIs do it in the user's locale.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from serving.ui.models import Locale

__all__ = ["RTL_LOCALES", "catalog", "negotiate", "translator"]

CATALOG_DIR = Path(__file__).with_name("i18n")
RTL_LOCALES = frozenset({Locale.AR})


@cache
def catalog(locale: Locale) -> dict[str, str]:
    """The messages of ``locale`` (English filling any gap)."""
    english = _read(Locale.EN)
    return english if locale == Locale.EN else {**english, **_read(locale)}


def _read(locale: Locale) -> dict[str, str]:
    messages: dict[str, str] = json.loads(
        (CATALOG_DIR / f"{locale.value}.json").read_text(encoding="utf-8")
    )
    return messages


def translator(locale: Locale) -> Callable[[str], str]:
    messages = catalog(locale)
    return lambda key: messages.get(key, key)


def negotiate(requested: str | None, accept_language: str = "") -> Locale:
    """``requested`` when it is a known locale, else the first known one the browser accepts."""
    candidates = [requested or ""] + [
        part.split(";")[0].strip()[:2].lower() for part in accept_language.split(",")
    ]
    for candidate in candidates:
        if candidate in Locale._value2member_map_:
            return Locale(candidate)
    return Locale.EN
