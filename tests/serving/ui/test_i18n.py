"""Every UI string exists in English, French and Arabic; Arabic pages are right-to-left."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient

from serving.ui.i18n import CATALOG_DIR, negotiate
from serving.ui.models import Locale

UI = CATALOG_DIR.parent


def test_catalogs_have_the_same_keys_and_no_empty_message() -> None:
    catalogs = {
        loc: json.loads((CATALOG_DIR / f"{loc.value}.json").read_text("utf-8")) for loc in Locale
    }
    english = set(catalogs[Locale.EN])
    for loc, messages in catalogs.items():
        assert set(messages) == english, (loc, set(messages) ^ english)
        assert all(value.strip() for value in messages.values()), loc


def test_every_literal_key_used_by_templates_and_scripts_is_in_the_catalog() -> None:
    english = json.loads((CATALOG_DIR / "en.json").read_text("utf-8"))
    sources = [*UI.glob("templates/*.html"), *UI.glob("static/*.js")]
    used = {
        key
        for path in sources
        for key in re.findall(r"""\bt\(["']([a-z_]+\.[a-z_.]+)["']\)""", path.read_text("utf-8"))
    }
    assert used and used <= set(english), used - set(english)


def test_language_negotiation_prefers_the_request_then_the_browser() -> None:
    assert negotiate("ar") is Locale.AR
    assert negotiate(None, "fr-FR,fr;q=0.9,en;q=0.5") is Locale.FR
    assert negotiate("xx", "de") is Locale.EN


def test_arabic_login_page_is_rtl(ui_client: TestClient) -> None:
    page = ui_client.get("/ui/login", params={"lang": "ar"}).text
    assert '<html lang="ar" dir="rtl">' in page
    assert "تسجيل الدخول" in page
    assert '<html lang="fr" dir="ltr">' in ui_client.get("/ui/login?lang=fr").text
