"""``basira serve``, ``basira worker``, ``basira tenants …`` and ``basira audit``: the service's
commands, added to the ``basira`` CLI through the ``basira.commands`` entry point."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from serving.settings import load_settings
from serving.ui.commands import feedback_app, users_app

__all__ = ["register"]

tenants_app = typer.Typer(help="Hospitals (tenants) and their API keys.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach the service's commands to the ``basira`` app."""
    app.command("serve")(serve_command)
    app.command("worker")(worker_command)
    app.add_typer(tenants_app, name="tenants")
    app.command("audit")(audit_command)
    app.command("demo")(demo_command)
    app.add_typer(users_app, name="users")
    app.add_typer(feedback_app, name="feedback")


def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
) -> None:
    """Run the service: the HTTP API, the analysis worker and the DICOM C-STORE listener,
    configured by BASIRA_* environment variables (docs/operations.md)."""
    import uvicorn

    from serving.app import create_app
    from serving.dimse import start_dicom_listener
    from serving.logs import configure_logging

    settings = load_settings()
    configure_logging()
    hooks = (start_dicom_listener,) if settings.dicom_port > 0 else ()
    app = create_app(settings, start_hooks=hooks)
    # No access log: request paths carry study UIDs; the audit log records access instead.
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)


def worker_command() -> None:
    """Run an analysis worker alone (beside services that run with BASIRA_RUN_WORKER=false)."""
    from serving.logs import configure_logging
    from serving.services import Services

    configure_logging()
    services = Services.from_settings(load_settings())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    services.start_worker()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        services.close()


@tenants_app.command("create")
def create_tenant_command(
    name: Annotated[str, typer.Argument(help="The hospital's name (unique).")],
    ae_title: Annotated[
        str | None, typer.Option("--ae-title", help="AE title its PACS sends C-STORE from.")
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option("--webhook-url", help="Where to POST signed result notices.")
    ] = None,
) -> None:
    """Create a hospital and print its API key (shown once; only its hash is stored)."""
    from serving.services import Services
    from serving.tenants import create_tenant

    services = Services.from_settings(load_settings())
    with services.db.session() as session:
        issued = create_tenant(session, name, ae_title=ae_title, webhook_url=webhook_url)
        tenant_id = issued.tenant.id
    typer.echo(f"tenant:  {name} ({tenant_id})")
    typer.echo(f"api key: {issued.api_key}")
    if issued.webhook_secret:
        typer.echo(f"webhook secret: {issued.webhook_secret}")
    typer.echo("Store the key now: it is not shown again.", err=True)


@tenants_app.command("list")
def list_tenants_command() -> None:
    """The hospitals, with their AE titles and webhooks."""
    from sqlalchemy import select

    from serving.models import Tenant
    from serving.services import Services

    services = Services.from_settings(load_settings())
    with services.db.session() as session:
        for tenant in session.scalars(select(Tenant).order_by(Tenant.name)):
            typer.echo(
                f"{tenant.name}\t{tenant.id}\tae={tenant.ae_title or '-'}\t"
                f"webhook={tenant.webhook_url or '-'}"
            )


@tenants_app.command("add-key")
def add_key_command(
    name: Annotated[str, typer.Argument(help="The hospital's name.")],
    role: Annotated[
        str, typer.Option(help="integration or admin (admin also reads the audit log).")
    ] = "integration",
) -> None:
    """Issue another API key for a hospital (printed once)."""
    from serving.models import KeyRole
    from serving.services import Services
    from serving.tenants import get_tenant, issue_key

    try:
        key_role = KeyRole(role)
    except ValueError:
        raise typer.BadParameter(f"role must be one of {[r.value for r in KeyRole]}") from None
    services = Services.from_settings(load_settings())
    with services.db.session() as session:
        key = issue_key(session, get_tenant(session, name), key_role)
    typer.echo(f"api key ({key_role}): {key}")


@tenants_app.command("revoke-keys")
def revoke_keys_command(name: Annotated[str, typer.Argument(help="The hospital's name.")]) -> None:
    """Revoke every API key of a hospital (issue a new one with add-key)."""
    from serving.services import Services
    from serving.tenants import get_tenant, revoke_keys

    services = Services.from_settings(load_settings())
    with services.db.session() as session:
        n = revoke_keys(session, get_tenant(session, name))
    typer.echo(f"revoked {n} key(s) of {name}")


def audit_command(
    tenant: Annotated[str | None, typer.Option(help="Only this hospital's events.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only events at or after this time (UTC).")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. result.read.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The audit log of access to patient data, newest first (for operators)."""
    from datetime import UTC

    from serving.audit import list_events
    from serving.services import Services
    from serving.tenants import get_tenant

    services = Services.from_settings(load_settings())
    with services.db.session() as session:
        tenant_id = get_tenant(session, tenant).id if tenant else None
        since_utc = since.replace(tzinfo=since.tzinfo or UTC) if since else None
        events = list_events(
            session, tenant_id=tenant_id, since=since_utc, action=action, limit=limit
        )
        for e in events:
            row = {
                "at": e.at.isoformat(),
                "tenant_id": e.tenant_id,
                "actor": e.actor,
                "action": e.action,
                "resource": e.resource,
                "client": e.client,
                "outcome": e.outcome,
            }
            typer.echo(
                json.dumps(row) if as_json else "\t".join(str(v or "-") for v in row.values())
            )
    sys.stdout.flush()


def demo_command(
    studies: Annotated[Path, typer.Argument(help="Folder of studies to submit (any layout).")],
    data: Annotated[Path, typer.Option(help="The demo's database and storage (made anew).")] = Path(
        "data/demo/service"
    ),
    model: Annotated[Path, typer.Option(help="Model release folder.")] = Path(
        "models/lung-nodule-unet/release"
    ),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    dicom_port: Annotated[int, typer.Option(help="DICOM C-STORE port.")] = 11112,
    exit_when_done: Annotated[
        bool, typer.Option(help="Stop once every study has a result instead of serving on.")
    ] = False,
) -> None:
    """The whole product on this machine: the service with the shipped model, a demo hospital
    and radiologist (login printed), and STUDIES submitted through the API as the worklist fills."""
    from serving.demo import DemoConfig, run_demo

    config = DemoConfig(
        studies_dir=studies,
        data_dir=data,
        model_dir=model,
        host=host,
        port=port,
        dicom_port=dicom_port,
        exit_when_done=exit_when_done,
    )
    run_demo(config, say=typer.echo)
