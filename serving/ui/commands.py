"""``basira users create``: review UI accounts, created by an operator on the service host."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from serving.settings import Settings

__all__ = ["users_app"]

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
    services = Services.from_settings(Settings())
    with services.db.session() as session:
        tenant_id = get_tenant(session, tenant).id
        create_user(session, tenant_id, username, password, role=user_role, locale=user_locale)
    typer.echo(f"user:     {username} ({user_role}) at {tenant}")
    if not password_stdin:
        typer.echo(f"password: {password}")
        typer.echo("Give the password to the user now: it is not shown again.", err=True)
