"""The radiologists' review UI, served by the same FastAPI service under ``/ui``: worklist,
viewer, per-finding feedback and sign-off (docs/ui.md).

:func:`serving.ui.app.install_ui` adds its routes, static files and Content-Security-Policy to an
app; the service's API keeps its deny-all policy. Its tables are in :mod:`serving.ui.models`.
"""
