"""The feedloop pages served by Airflow's api-server under /feedloop (see feedloop.ops.ui.mount).

Every page sits behind Airflow's own login and auth manager (the session cookie of the UI, or a
bearer token): reading needs read access to the retrain_ranker DAG (the Model report tab: to the
run's DAG); a rollback needs the right to trigger rollback_ranker and a canary change the right to
trigger canary_ranker, the DAGs that make the same change. Objects from S3 (report.html, Data Docs)
are streamed through these routes, so their links answer behind the same login, sandboxed (see
feedloop.ops.ui.headers). A pointer form also needs the token of the login that loaded it (feedloop.ops.ui.csrf).
Every parameter is typed and bounded: a bad one is a 422 naming it and its rule, never a 500.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import jinja2
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from feedloop.airflow import assets
from feedloop.core.config import Settings, load_settings
from feedloop.core.layout import RETRIEVER, HourPartition
from feedloop.quality import overview
from feedloop.promotion.pointer_plan import RegistryError
from feedloop.promotion.registry import Registry
from feedloop.core.storage import ObjectStore
from feedloop.core import names
from feedloop.ops.ui import airflow_db, csrf, datadocs, headers
from feedloop.ops.ui.models import PAGE_SIZE, Catalog, change_pointer, retriever_summary
from feedloop.ops.ui.runs import RunModel, run_model

CATALOG = Catalog()
RETRIEVERS = Catalog(retriever_summary)
DEFAULT_DAYS, MAX_DAYS = 7, 62
# the lake's days come from epoch timestamps; the far bound keeps the window arithmetic off date.max
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2999, 12, 31)
STATIC = Path(__file__).parent / "static"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DOCS_PAGE = re.compile(r"index\.html|hour=\d{2}/(rows|metrics)\.html")
_BY_RUN = re.compile(rf"^({names.RETRAIN_DAG}|{names.ROLLBACK_DAG}|{names.CANARY_DAG}) (\S+)$")

READ_MODELS = Depends(requires_access_dag("GET", param_dag_id=names.RETRAIN_DAG))
ROLLBACK = Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=names.ROLLBACK_DAG))
CANARY = Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=names.CANARY_DAG))
READ_RUN = Depends(requires_access_dag("GET", DagAccessEntity.RUN))


def create_app() -> FastAPI:
    app = FastAPI(title="feedloop", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(headers.SecurityHeaders)
    app.add_exception_handler(StarletteHTTPException, _login_or_error)
    app.add_exception_handler(RequestValidationError, _bad_parameter)

    @app.get("/models", dependencies=[READ_MODELS])
    def models(request: Request, user: GetUserDep, changed: int | None = None, page: Annotated[int, Query(ge=1)] = 1,
               history_page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
        return _models_page(request, user, changed=changed, page=page, history_page=history_page)

    @app.post("/models/rollback", dependencies=[ROLLBACK])
    def rollback(request: Request, user: GetUserDep, reason: Annotated[str, Form()] = "",
                 to: Annotated[str, Form()] = "", shown_seq: Annotated[str, Form()] = "",
                 csrf_token: Annotated[str, Form()] = "") -> Response:
        return _pointer_change(request, user, "rollback", reason=reason, to=to, shown_seq=shown_seq,
                               csrf_token=csrf_token)

    @app.post("/models/canary/{verb}", dependencies=[CANARY])
    def canary(verb: str, request: Request, user: GetUserDep, reason: Annotated[str, Form()] = "",
               shown_seq: Annotated[str, Form()] = "", csrf_token: Annotated[str, Form()] = "") -> Response:
        if verb not in ("promote", "abort"):
            raise HTTPException(404, f"no canary action {verb!r}: promote or abort")
        return _pointer_change(request, user, f"{verb}-canary", reason=reason, shown_seq=shown_seq,
                               csrf_token=csrf_token)

    @app.get("/versions/{version}/report.html", dependencies=[READ_MODELS])
    def version_report(version: str) -> HTMLResponse:
        return headers.stored_html(_report_bytes(version))

    @app.get("/runs/{dag_id}/{run_id}/report", dependencies=[READ_RUN])
    def run_report(dag_id: str, run_id: str, request: Request, session: SessionDep) -> HTMLResponse:
        return _run_report(request, session, dag_id, run_id)

    @app.get("/runs/{dag_id}/{run_id}/report.html", dependencies=[READ_RUN])
    def run_report_page(dag_id: str, run_id: str, request: Request, session: SessionDep) -> HTMLResponse:
        return _run_report_page(request, session, dag_id, run_id)

    @app.get("/quality", dependencies=[READ_MODELS])
    def quality(request: Request, session: SessionDep,
                end: Annotated[date | None, Query(ge=FIRST_DAY, le=LAST_DAY)] = None,
                days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = DEFAULT_DAYS) -> HTMLResponse:
        return _quality_page(request, session, end=end, days=days)

    @app.get("/quality/docs/dt={day}/{page:path}", dependencies=[READ_MODELS])
    def data_docs(day: date, page: str) -> HTMLResponse:
        if not _DOCS_PAGE.fullmatch(page):
            raise HTTPException(404, f"no Data Docs page {page!r}: index.html or hour=HH/rows.html|metrics.html")
        settings = _settings()
        key = f"{overview.day_prefix(day)}{page}"
        found = _store().get(settings.s3.lake_bucket, key)
        if found is None:
            raise HTTPException(404, f"{_store().uri(settings.s3.lake_bucket, key)} does not exist: "
                                     f"{day} was not validated (yet)")
        return headers.stored_html(datadocs.readable(found.body))

    @app.get("/static/airflow-links.js")
    def links_script() -> Response:
        return Response(_static("airflow-links.js"), media_type="text/javascript",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/static/{name}.svg")
    def icon(name: str) -> Response:
        if name not in _ICONS:
            raise HTTPException(404, f"no icon {name!r}")
        return Response(_ICONS[name], media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    return app


# ---- Models ---------------------------------------------------------------------------------------

def _models_page(request: Request, user: Any, *, changed: int | None = None, error: str | None = None,
                 form: dict[str, str] | None = None, status_code: int = 200, page: int = 1,
                 history_page: int = 1) -> HTMLResponse:
    registry = _registry()
    live = registry.live()
    ids = CATALOG.version_ids(registry)
    size = PAGE_SIZE
    versions = CATALOG.versions(registry, ids[(page - 1) * size:page * size])
    history, history_total = CATALOG.history(registry, live, offset=(history_page - 1) * size, limit=size)
    for row in history:
        m = _BY_RUN.match(row.get("by") or "")
        row["by_run_url"] = _run_url(request, m[1], m[2]) if m else None
    pointer = live.pointer if live else None
    live_version = pointer["version"] if pointer else None
    done = next((row for row in history if row["seq"] == changed), None) if changed else None
    unservable = {v for v in ids if (s := CATALOG.cached(registry, v)) is not None and not s.servable}
    retrievers = Registry(_store(), _settings().s3.models_bucket, RETRIEVER)
    retriever_live = retrievers.live()
    retriever_ids = RETRIEVERS.version_ids(retrievers)
    return _render(request, "models.html", status_code=status_code, pointer=pointer,
                   retriever_pointer=retriever_live.pointer if retriever_live else None,
                   retriever_total=len(retriever_ids),
                   retriever_versions=RETRIEVERS.versions(retrievers, retriever_ids[:size]),
                   canary=(pointer or {}).get("canary"), versions=versions, history=history,
                   total=len(ids), page=page, pages=max(1, -(-len(ids) // size)),
                   history_total=history_total, history_page=history_page,
                   history_pages=max(1, -(-history_total // size)),
                   targets=[v for v in ids if v != live_version and v not in unservable],
                   default_target=(form or {}).get("to") or (pointer or {}).get("previous"),
                   reason=(form or {}).get("reason", ""), error=error, done=done,
                   csrf_field=csrf.FIELD, csrf_token=csrf.issue(request, user))


def _pointer_change(request: Request, user: Any, action: str, *, reason: str, shown_seq: str, csrf_token: str,
                    to: str | None = None) -> Response:
    _same_origin(request)
    csrf.check(request, user, csrf_token)
    try:
        pointer = change_pointer(_registry(), action=action, shown_seq=int(shown_seq) if shown_seq.isdigit() else None,
                                 by=f"airflow-ui {user.get_name()}", reason=reason.strip(), to=to,
                                 settings=_settings())
    except RegistryError as exc:
        return _models_page(request, user, error=str(exc), form={"to": to or "", "reason": reason},
                            status_code=409)
    return RedirectResponse(f"{_own_root(request)}/models?changed={pointer['seq']}", status_code=303)


def _same_origin(request: Request) -> None:
    """Refuse a form posted from another site by name (the form token is the lock; this says who posted)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"form posted from {origin}, not from this Airflow: refused")


# ---- Model report tab -----------------------------------------------------------------------------

def _run_report(request: Request, session: Any, dag_id: str, run_id: str) -> HTMLResponse:
    """The tab: the run's banner (ours, with links into Airflow) above its report, framed sandboxed."""
    found = _run_model(request, session, dag_id, run_id)
    if isinstance(found, HTMLResponse):
        return found
    ds, model, registry = found
    live = registry.live()
    page = f"{_own_root(request)}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/report.html"
    return _render(request, "report_tab.html", run_id=run_id, ds=ds, model=model, report_url=page,
                   live=live.pointer if live else None,
                   models_url=f"{_airflow_root(request)}/plugin/{names.MODELS_ROUTE}")


def _run_report_page(request: Request, session: Any, dag_id: str, run_id: str) -> HTMLResponse:
    """The report.html the tab frames, as stored by the run's training: sandboxed."""
    found = _run_model(request, session, dag_id, run_id)
    if isinstance(found, HTMLResponse):
        return found
    ds, model, registry = found
    stored = registry.store.get(registry.bucket, model.report_key or "")
    if stored is None:
        uri = registry.store.uri(registry.bucket, model.report_key or "")
        return _message(request, f"Model report: {ds}", f"{uri} does not exist", status_code=404,
                        run_url=_run_url(request, dag_id, run_id))
    return headers.stored_html(stored.body)


def _run_model(request: Request, session: Any, dag_id: str,
               run_id: str) -> tuple[str, RunModel, Registry] | HTMLResponse:
    """(the run's training day, the version it shows, the registry), or the page that says why there is none."""
    if dag_id != names.RETRAIN_DAG:
        return _message(request, "Model report", f"The Model report belongs to {names.RETRAIN_DAG} runs; "
                                                 f"{dag_id} does not train models.")
    exists, logical_date = airflow_db.run_logical_date(session, dag_id, run_id)
    if not exists:
        return _message(request, "Model report", f"{dag_id} has no run {run_id!r}.", status_code=404)
    if logical_date is None:
        return _message(request, "Model report", f"run {run_id} has no logical date, so no training day.")
    ds = logical_date.astimezone(timezone.utc).date().isoformat()
    registered = airflow_db.task_result(session, dag_id, run_id, "register")
    registry = _registry()
    model = run_model(registry, ds, registered_by_run=(registered or {}).get("version")
                      if isinstance(registered, dict) else None)
    if model.report_key is None:
        return _message(request, f"Model report: {ds}", model.note, run_url=_run_url(request, dag_id, run_id))
    return ds, model, registry


def _report_bytes(version: str) -> bytes:
    if not _VERSION.fullmatch(version):
        raise HTTPException(404, f"{version!r} is not a version id")
    try:
        return _registry().read(version, "report.html")
    except RegistryError as exc:
        raise HTTPException(404, str(exc)) from None


# ---- Data quality ---------------------------------------------------------------------------------

def _quality_page(request: Request, session: Any, *, end: date | None, days: int) -> HTMLResponse:
    settings, store = _settings(), _store()
    lake_bucket = settings.s3.lake_bucket
    end = end or overview.latest_day(store, lake_bucket) or datetime.now(timezone.utc).date()
    start = max(end - timedelta(days=days - 1), FIRST_DAY)
    statuses = overview.days_status(store, lake_bucket, start, end + timedelta(days=1))[::-1]
    uris = {(d.day, h): assets.hour_partition_uri(settings, HourPartition(d.day, h).prefix)
            for d in statuses for h in range(24)}
    producers = airflow_db.asset_producers(session, uris.values())
    validation_runs = airflow_db.existing_runs(session, names.RETRAIN_DAG, (d.run_id for d in statuses))
    ingest = {key: [(run_id, _run_url(request, dag_id, run_id)) for dag_id, run_id in producers.get(uri, [])]
              for key, uri in uris.items()}
    own = _own_root(request)
    return _render(request, "quality.html", days=statuses, ingest=ingest, start=start, end=end, span=days,
                   validation_run_url={d.run_id: _run_url(request, names.RETRAIN_DAG, d.run_id)
                                       for d in statuses if d.run_id in validation_runs},
                   docs_root=f"{own}/quality/docs", states=overview.STATES,
                   earlier=f"{own}/quality?end={start - timedelta(days=1)}&days={days}" if start > FIRST_DAY else None,
                   later=f"{own}/quality?end={min(end + timedelta(days=days), LAST_DAY)}&days={days}"
                   if end < LAST_DAY else None)


# ---- shared ---------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _settings() -> Settings:
    return load_settings()


@lru_cache(maxsize=1)
def _store() -> ObjectStore:
    """One S3 client per process (building one costs tens of ms; boto3 clients are thread-safe)."""
    return ObjectStore.from_settings(_settings())


def _registry() -> Registry:
    return Registry(_store(), _settings().s3.models_bucket)


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, digits=4: "–" if v is None else f"{v:.{digits}f}"
    env.filters["signed"] = lambda v: "–" if v is None else f"{v:+.4f}"
    return env


def _render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _templates().get_template(template).render(own=_own_root(request), airflow=_airflow_root(request),
                                                     **context)
    return HTMLResponse(html, status_code=status_code)


def _message(request: Request, title: str, text: str, *, status_code: int = 200,
             run_url: str | None = None) -> HTMLResponse:
    return _render(request, "message.html", status_code=status_code, title=title, text=text, run_url=run_url)


def _own_root(request: Request) -> str:
    """Where this app is mounted, e.g. /feedloop (behind a proxy path too)."""
    return request.scope.get("root_path", "").rstrip("/") or names.URL_PREFIX


def _airflow_root(request: Request) -> str:
    return _own_root(request).removesuffix(names.URL_PREFIX)


def _run_url(request: Request, dag_id: str, run_id: str) -> str:
    """The run's page in Airflow's UI."""
    return f"{_airflow_root(request)}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


async def _bad_parameter(request: Request, exc: RequestValidationError) -> Response:
    """422 naming each bad parameter, its rule and what to do (FastAPI's list stays under "detail")."""
    message = "; ".join(_describe(error) for error in exc.errors())
    if "text/html" in request.headers.get("accept", ""):
        return _message(request, "Bad request", message, status_code=422)
    return JSONResponse({"message": message, "detail": jsonable_encoder(exc.errors())}, status_code=422)


def _describe(error: dict[str, Any]) -> str:
    where, *name = error.get("loc") or ("request",)
    field = ".".join(str(part) for part in name) or where
    value = str(error.get("input", ""))
    shown = value if len(value) <= 40 else value[:37] + "..."
    todo = "correct it or leave it out for its default" if where == "query" else "correct it"
    return f"{where} parameter {field!r} = {shown!r}: {error.get('msg', 'invalid')}; {todo}"


async def _login_or_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A browser without a valid login goes to Airflow's login page (and back); API clients get the error."""
    if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
    from fastapi.exception_handlers import http_exception_handler

    return await http_exception_handler(request, exc)


_ICONS = {
    "models": b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
              b'stroke-width="2"><path d="M3 3v18h18"/><path d="M7 15l4-4 3 3 5-6"/></svg>',
    "quality": b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
               b'stroke-width="2"><rect x="3" y="3" width="18" height="18" rx="2"/><path d="M8 12l3 3 5-6"/></svg>',
}
