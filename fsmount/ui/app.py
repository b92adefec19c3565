"""The web pages: Starlette routes over fsmount/ui/model.py, rendered with the package's Jinja2 templates."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.errors import FsmountError, NotFoundError, StateError, UsageError
from fsmount.format.objects import EMPTY_TREE_HASH, DirEntry, FileEntry
from fsmount.ui import changes, graph, model, preview
from fsmount.ui.auth import Gate
from fsmount.ui.metadata import attachments

log = logging.getLogger(__name__)
DIR_PAGE = 500  # directory entries per page
CHANGE_PAGE = 100  # changed paths per page
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def v_url(vid: str, *rest: str, **query: Any) -> str:
    """/v/<id>[/files/<path>] with each path part quoted, plus a query string of the non-empty values."""
    url = f"/v/{vid}" + "".join("/" + quote(r, safe="/") for r in rest)
    q = {k: v for k, v in query.items() if v not in (None, "", 0)}
    return url + (f"?{urlencode(q)}" if q else "")


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("fsmount.ui", "templates"), autoescape=select_autoescape(),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(human=human, when=model.when)
    env.globals.update(v_url=v_url, KINDS=changes.KINDS)
    return env


class Pages:
    """The route handlers; every one reads the store anew through `ws` (its cache and reader)."""

    def __init__(self, ws: Workspace, preview_limit: int) -> None:
        self.ws = ws
        self.preview_limit = preview_limit
        self.env = _environment()

    def render(self, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(store=self.ws.store_url, **ctx)
        return HTMLResponse(html, status, headers=SECURITY_HEADERS)

    def load(self, h: bytes) -> Any:
        return self.ws.reader.tree(h)

    # -- pages ---------------------------------------------------------------------------------

    def datasets(self, request: Request) -> Response:
        q = request.query_params.get("q", "")
        return self.render("datasets.html", q=q, groups=model.datasets(self.ws, q))

    def version(self, request: Request) -> Response:
        st = model.state_of(self.ws, request.path_params["vid"])
        rec = model.record_of(self.ws, st)
        kind, start = _kind(request), _int(request, "start")
        ctx: dict[str, Any] = {"st": st, "rec": rec, "kind": kind, "start": start, "page_size": CHANGE_PAGE}
        if rec is not None:
            nodes, cut = model.lineage_graph(self.ws, st.id)
            ctx["svg"] = Markup(graph.render(nodes, st.id, v_url, cut))  # graph.render escapes every text
            ctx["parent_labels"] = {p: nodes[p].label if p in nodes else p[:12] for p in rec.parents}
            ctx["counts"] = changes.count(self.load, rec.base, rec.root)
            ctx["changed"] = changes.page(self.load, rec.base, rec.root, kind, start, CHANGE_PAGE)
            ctx["attachments"] = attachments(self.ws.store, st.id)
        return self.render("version.html", **ctx)

    def files(self, request: Request) -> Response:
        st, rec = model.readable(self.ws, request.path_params["vid"])
        path = request.path_params.get("path", "")
        parts = model.clean_path(path)
        e = model.entry_at(self.ws, rec.root, parts)
        crumbs = [("/".join(parts[: i + 1]), p) for i, p in enumerate(parts)]
        if e is not None and not isinstance(e, DirEntry):
            pv = preview.preview(self.ws.reader, e, self.preview_limit) if isinstance(e, FileEntry) else None
            return self.render("file.html", st=st, rec=rec, entry=e, path="/".join(parts), crumbs=crumbs,
                               pv=pv)
        tree = self.load(rec.root if e is None else e.tree)
        after = request.query_params.get("after")
        start, entries = model.slice_dir(tree, _int(request, "start"), after, DIR_PAGE)
        return self.render("files.html", st=st, rec=rec, path="/".join(parts), crumbs=crumbs, entries=entries,
                           start=start, total=len(tree.entries), page_size=DIR_PAGE)

    def raw(self, request: Request) -> Response:
        """An image's bytes (for its preview), under the preview limit; nothing else is served raw."""
        _, rec = model.readable(self.ws, request.path_params["vid"])
        e = model.entry_at(self.ws, rec.root, model.clean_path(request.path_params["path"]))
        ctype = preview.image_type(e.name) if isinstance(e, FileEntry) else None
        if not isinstance(e, FileEntry) or ctype is None or e.size > self.preview_limit:
            raise model.PageNotFound("no image preview for this path")
        data = preview.read_prefix(self.ws.reader, e, e.size)
        headers = {**SECURITY_HEADERS, "cache-control": "private, max-age=3600"}
        return Response(data, media_type=ctype, headers=headers)

    def diff(self, request: Request) -> Response:
        a_ref, b_ref = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a_ref or not b_ref:
            return self.render("diff.html", a_ref=a_ref, b_ref=b_ref, a=None)
        states = registry.list_states(self.ws.store)
        try:
            a = registry.resolve(self.ws.store, a_ref, states=states)
            b = registry.resolve(self.ws.store, b_ref, states=states)
        except (NotFoundError, UsageError, StateError) as e:  # unknown, ambiguous, or not final
            raise model.PageNotFound(str(e)) from None
        ra, rb = registry.readable_record(self.ws.reader, a), registry.readable_record(self.ws.reader, b)
        parts = model.clean_path(request.query_params.get("dir", ""))
        ha, hb = _tree_or_none(self.ws, ra.root, parts), _tree_or_none(self.ws, rb.root, parts)
        if ha is None and hb is None:
            raise model.PageNotFound(f"{'/'.join(parts)}: in neither version")
        ha, hb = ha or EMPTY_TREE_HASH, hb or EMPTY_TREE_HASH
        kind, start = _kind(request), _int(request, "start")
        prefix = "/".join(parts) + "/" if parts else ""
        return self.render(
            "diff.html", a_ref=a_ref, b_ref=b_ref, a=a, b=b, dir="/".join(parts), kind=kind, start=start,
            counts=changes.dir_counts(self.load, ha, hb),
            changed=changes.page(self.load, ha, hb, kind, start, CHANGE_PAGE, prefix), page_size=CHANGE_PAGE)

    def mounts(self, request: Request) -> Response:
        return self.render("mounts.html", mounts=model.mounts())


def _tree_or_none(ws: Workspace, root: bytes, parts: list[str]) -> bytes | None:
    """The tree at `parts`, or None where the path is missing or not a directory (one side of a diff)."""
    try:
        return model.tree_at(ws, root, parts)
    except model.PageNotFound:
        return None


def _int(request: Request, key: str) -> int:
    v = request.query_params.get(key, "0")
    if not v.isdigit() or len(v) > 12:
        raise model.PageNotFound(f"{key}={v!r}: not a page position")
    return int(v)


def _kind(request: Request) -> str:
    kind = request.query_params.get("kind", "added")
    if kind not in changes.KINDS:
        raise model.PageNotFound(f"kind={kind!r}: one of {', '.join(changes.KINDS)}")
    return kind


def create_app(ws: Workspace, *, token: str | None = None, preview_limit: int = preview.DEFAULT_LIMIT) -> Any:
    """The ASGI app: the pages, the packaged static files, 404/500 pages, behind the token gate."""
    pages = Pages(ws, preview_limit)

    def not_found(request: Request, exc: Exception) -> Response:
        return pages.render("error.html", 404, title="Not found", message=str(exc) or "no such page")

    def failed(request: Request, exc: Exception) -> Response:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return pages.render("error.html", 500, title="Error", message=str(exc))

    def http_error(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        return pages.render("error.html", code, title=f"HTTP {code}", message=getattr(exc, "detail", ""))

    def version_ref(request: Request) -> Response:
        """/ref?r=REF: any REF form the CLI takes, redirected to its version's page."""
        try:
            st = registry.resolve(ws.store, request.query_params.get("r", ""), require_final=False)
        except (NotFoundError, UsageError) as e:
            raise model.PageNotFound(str(e)) from None
        return RedirectResponse(v_url(st.id), 303)

    static = Path(__file__).with_name("static")
    routes = [
        Route("/", pages.datasets),
        Route("/ref", version_ref),
        Route("/v/{vid}", pages.version),
        Route("/v/{vid}/files", pages.files),
        Route("/v/{vid}/files/{path:path}", pages.files),
        Route("/v/{vid}/raw/{path:path}", pages.raw),
        Route("/diff", pages.diff),
        Route("/mounts", pages.mounts),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    handlers: dict[Any, Any] = {NotFoundError: not_found, FsmountError: failed, HTTPException: http_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    return Gate(app, token)
