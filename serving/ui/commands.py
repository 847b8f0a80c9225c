"""``basira users create`` (review UI accounts, created by an operator on the service host) and
``basira feedback export`` (signed reviews as a pseudonymised training dataset)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from serving.settings import load_settings

__all__ = ["feedback_app", "users_app"]

users_app = typer.Typer(help="Review UI accounts (radiologists, admins).", no_args_is_help=True)


@users_app.command("create")
def create_user_command(
    tenant: Annotated[str, typer.Argument(help="The hospital's name.")],
    username: Annotated[str, typer.Argument(help="The user's sign-in name (unique per hospital).")],
    role: Annotated[str, typer.Option(help="radiologist or admin.")] = "radiologist",
    locale: Annotated[str, typer.Option(help="en, fr or ar.")] = "en",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a UI user; without --password-stdin a password is generated and printed once."""
    from serving.services import Services
    from serving.tenants import get_tenant
    from serving.ui.accounts import create_user, generate_password
    from serving.ui.models import Locale, Role

    try:
        user_role, user_locale = Role(role), Locale(locale)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    if len(password) < 12:
        raise typer.BadParameter("the password needs at least 12 characters")
    services = Services.from_settings(load_settings())
    with services.db.session() as session:
        tenant_id = get_tenant(session, tenant).id
        create_user(session, tenant_id, username, password, role=user_role, locale=user_locale)
    typer.echo(f"user:     {username} ({user_role}) at {tenant}")
    if not password_stdin:
        typer.echo(f"password: {password}")
        typer.echo("Give the password to the user now: it is not shown again.", err=True)


feedback_app = typer.Typer(help="Radiologists' feedback as training data.", no_args_is_help=True)


@feedback_app.command("export")
def export_feedback_command(
    out: Annotated[Path, typer.Option("--out", help="Dataset folder (manifest.json + cases/).")],
    key_file: Annotated[
        Path,
        typer.Option("--key-file", help="Re-identification key (0600), outside --out."),
    ],
    tenant: Annotated[str | None, typer.Option(help="Only this hospital's reviews.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only reviews signed at or after this time (UTC).")
    ] = None,
) -> None:
    """Export signed reviews as a pseudonymised manifest dataset for basira prepare/train."""
    from rich.progress import Progress

    from serving.services import Services
    from serving.tenants import get_tenant
    from serving.ui.export import ExportRequest, export_feedback

    services = Services.from_settings(load_settings())
    tenant_id = None
    if tenant:
        with services.db.session() as session:
            tenant_id = get_tenant(session, tenant).id
    since_utc = since.replace(tzinfo=since.tzinfo or UTC) if since else None
    request = ExportRequest(out, key_file, tenant_id=tenant_id, since=since_utc)
    with Progress(transient=True) as progress:
        task = progress.add_task("exporting", total=None)
        summary = export_feedback(
            services.db,
            services.store,
            services.auditor,
            request,
            on_case=lambda done, total: progress.update(task, completed=done, total=total),
        )
    typer.echo(
        f"{summary.manifest_path}: {summary.n_cases} cases "
        f"({summary.n_negative} negative, {summary.n_lesions} lesions)"
    )
    typer.echo(f"re-identification key: {key_file} (keep it apart from the dataset)", err=True)
