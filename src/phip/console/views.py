"""The console's routes (``/console``): login and logout, the overview, the data-quality scorecard
and an institution's findings.  Pages are Jinja2 templates; filters and paging update a part of
the page with htmx (``HX-Request``) and fall back to ordinary links and forms without it.

Who may open what is declared on each route (``x-phip-access``, enforced by the security
capability's route guard, like every API route); what a page shows is read through the caller's
repository (the access seam) and the quality service's own functions.
"""

from __future__ import annotations

import re
import time
from datetime import date
from functools import cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from phip import __version__
from phip.console import assets, queries
from phip.console import session as S
from phip.fhir.errors import FhirError

router = APIRouter(tags=["console"], include_in_schema=False)
PUBLIC = {"x-phip-access": "public"}
ANY = {"x-phip-access": "any"}


def _quality_roles() -> list[str]:
    from phip.quality.api import ACCESS

    return list(ACCESS["x-phip-access"])


QUALITY = {"x-phip-access": _quality_roles()}
PAGE = 50
DIMENSIONS = ("completeness", "conformance", "consistency", "timeliness", "uniqueness", "upload")
LABELS = {
    "completeness": "完整性", "conformance": "规范性", "consistency": "一致性", "timeliness": "及时性",
    "uniqueness": "唯一性", "upload": "上传率",
}
STATUS = {"open": "待整改", "resolved": "已整改", "cancelled": "已撤销"}
TASK_STATUS = {"requested": "已下发", "in-progress": "处理中", "completed": "已完成", "cancelled": "已取消"}
LEVELS = {"county": "县级", "prefecture": "市级", "province": "省级", "national": "国家级"}
ROLES = {"admin": "管理员", "node": "节点", "manager": "管理者", "public-health": "公共卫生", "clinician": "医生",
         "family-doctor": "家庭医生", "insurer": "医保", "resident": "居民", "auditor": "审计员"}
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@cache
def _env() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("phip.console", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(prefix=S.PREFIX, version=__version__, labels=LABELS, dimensions=DIMENSIONS,
                       status_labels=STATUS, task_labels=TASK_STATUS, levels=LEVELS, roles=ROLES,
                       csrf_field=S.CSRF_FIELD)
    env.filters["pct"] = lambda v: "–" if v is None else f"{v * 100:.2f}%"
    env.filters["num"] = lambda v: f"{v:,}"
    return env


def render(template: str, /, **ctx: Any) -> str:
    return str(_env().get_template(template).render(**ctx))


def _csrf(request: Request) -> tuple[str, bool]:
    value = request.cookies.get(S.CSRF_COOKIE)
    return (value, False) if value else (S.new_csrf(), True)


def page(request: Request, template: str, code: int = 200, /, **ctx: Any) -> HTMLResponse:
    """An HTML answer with the console's headers; sets the CSRF cookie when the browser has none."""
    token, fresh = _csrf(request)
    who = _who()
    nav_quality = who is not None and _may_see_quality(_node(request), who)
    body = render(template, request=request, csrf=token, principal=who, nav_quality=nav_quality, **ctx)
    resp = HTMLResponse(body, status_code=code)
    _headers(resp)
    if fresh:
        resp.headers.append("set-cookie", S.cookie_header(S.CSRF_COOKIE, token, max_age=12 * 3600,
                                                          secure=request.url.scheme == "https"))
    return resp


def _headers(resp: Response) -> None:
    resp.headers["content-security-policy"] = S.CSP
    # the node's default (no-referrer) makes browsers send "Origin: null" with the console's own forms
    resp.headers["referrer-policy"] = "same-origin"
    resp.headers["cache-control"] = "no-store"
    resp.headers["vary"] = "HX-Request, HX-Target"


def _who() -> Any:
    from phip.api.context import current_principal

    return current_principal.get()


def _principal() -> Any:
    p = _who()
    if p is None:  # the routes below are not public: Authenticate has set it
        raise FhirError(401, "This page needs a session", code="login", msg_id="PHIP-1401")
    return p


def _node(request: Request) -> Any:
    return request.app.state.node


def _fragment(request: Request, target: str) -> bool:
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == target


# -- static files -------------------------------------------------------------------------------------------
def _static_route(name: str) -> None:
    def serve() -> Response:
        f = assets.path(name)
        if f is None:
            return Response(f"{name} is not available on this node (not fetched from the npm registry yet)\n",
                            status_code=404, media_type="text/plain; charset=utf-8")
        return FileResponse(f, media_type=assets.MEDIA[f.suffix],
                            headers={"Cache-Control": "public, max-age=86400"})

    serve.__name__ = f"static_{name.replace('.', '_')}"
    router.add_api_route(f"{S.PREFIX}/static/{name}", serve, methods=["GET"], openapi_extra=PUBLIC)


for _name in assets.NAMES:
    _static_route(_name)


# -- login and logout ----------------------------------------------------------------------------------------
def _login_page(request: Request, status: int = 200, error: str | None = None, nxt: str | None = None) -> Response:
    q = request.query_params
    return page(request, "login.html", status, error=error, next=S.safe_next(nxt or q.get("next")),
                expired=q.get("expired") == "1", logged_out=q.get("logged_out") == "1",
                password_login="security" in _node(request).ext)


@router.get(S.LOGIN, openapi_extra=PUBLIC)
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post(S.LOGIN, openapi_extra=PUBLIC)
async def login(request: Request) -> Response:
    """Username and password (the node's password grant, with its lockout and audit), or a token
    printed by ``phip token``/``phip demo``, checked like any bearer token; either becomes the
    session cookie."""
    from phip.core.hooks import AuthEvent, Point

    node = _node(request)
    form = await request.form()
    f = {k: str(v) for k, v in form.items()}
    nxt = S.safe_next(f.get("next"))
    if not S.same_origin(request.scope) or not S.csrf_ok(request.cookies.get(S.CSRF_COOKIE), f.get(S.CSRF_FIELD)):
        return _login_page(request, 403, "表单已失效，请重新提交 (the form expired or came from another site; "
                                         "please try again)", nxt)
    source = request.client.host if request.client else None
    pasted = f.get("token", "").strip()
    if pasted:
        from phip.security.tokens import TokenError

        try:
            p = node.tokens.verify(pasted)
        except TokenError as e:
            node.store.hooks.fire(Point.AUTHENTICATE, AuthEvent("failure", "console-token", None, None, None,
                                                                source, str(e)))
            return _login_page(request, 401, f"令牌无效 (the token is not valid: {e})", nxt)
        node.store.hooks.fire(Point.AUTHENTICATE, AuthEvent("success", "console-token", p.sub, p.role, p.org,
                                                            source))
        token = pasted
        ttl = int((p.claims or {}).get("exp", time.time() + 300) - time.time())
    else:
        if "security" not in node.ext:
            return _login_page(request, 400, "本节点未启用账号登录，请使用令牌 (password login needs the security "
                                             "capability; sign in with a token)", nxt)
        if not f.get("username") or not f.get("password"):
            return _login_page(request, 400, "请输入用户名和密码 (enter a username and a password)", nxt)
        from phip.security.oauth import TokenRefused, exchange

        try:
            answer = await exchange(node, {"grant_type": "password", "username": f["username"],
                                           "password": f["password"]}, None, source, [node.tokens.issuer])
        except TokenRefused as e:
            return _login_page(request, 401, f"登录失败 (sign-in failed: {e.description})", nxt)
        token, ttl = answer["access_token"], int(answer["expires_in"])
    if ttl <= 0:
        return _login_page(request, 401, "令牌已过期 (the token has expired)", nxt)
    secure = request.url.scheme == "https"
    resp = RedirectResponse(nxt, status_code=303)
    resp.headers.append("set-cookie", S.cookie_header(S.SESSION_COOKIE, token, max_age=ttl, secure=secure))
    # a new CSRF value for the session (one fixed before the login is never reused)
    resp.headers.append("set-cookie", S.cookie_header(S.CSRF_COOKIE, S.new_csrf(), max_age=12 * 3600, secure=secure))
    _headers(resp)
    return resp


@router.post(S.LOGOUT, openapi_extra=PUBLIC)
async def logout(request: Request) -> Response:
    form = await request.form()
    if not S.same_origin(request.scope) or not S.csrf_ok(request.cookies.get(S.CSRF_COOKIE),
                                                         str(form.get(S.CSRF_FIELD) or "")):
        return page(request, "forbidden.html", 403, rule="csrf",
                    message="表单已失效或来自其他网站 (the form expired or came from another site)")
    secure = request.url.scheme == "https"
    resp = RedirectResponse(f"{S.LOGIN}?logged_out=1", status_code=303)
    resp.headers.append("set-cookie", S.cookie_header(S.SESSION_COOKIE, "", max_age=0, secure=secure))
    resp.headers.append("set-cookie", S.cookie_header(S.CSRF_COOKIE, "", max_age=0, secure=secure))
    _headers(resp)
    return resp


# -- overview ------------------------------------------------------------------------------------------------
@router.get(f"{S.PREFIX}/", openapi_extra=ANY)
def overview(request: Request) -> Response:
    from phip.cn import regions

    node = _node(request)
    p = _principal()
    repo = node.store.repository()
    counts = queries.resource_counts(repo)
    changes = queries.recent_changes(repo)
    cfg = node.config
    return page(request, "overview.html", node=cfg, region_name=regions.full_name(cfg.region) or cfg.region,
                counts=counts, total=sum(n for _t, n in counts), changes=changes,
                quality=_may_see_quality(node, p), quality_installed="quality" in node.ext, active="overview")


def _may_see_quality(node: Any, p: Any) -> bool:
    # the same declaration the route guard enforces; without the security capability nothing is guarded
    return "security" not in node.ext or p.role in QUALITY["x-phip-access"]


# -- data quality ----------------------------------------------------------------------------------------------
class Filters:
    """The quality pages' filters, from the query string (a bad value is dropped and reported)."""

    def __init__(self, request: Request, principal: Any) -> None:
        from phip.quality.api import _scope

        q = request.query_params
        self.errors: list[str] = []
        self.date_from = self._day(q.get("from"), "from")
        self.date_to = self._day(q.get("to"), "to")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            self.errors.append("开始日期晚于结束日期 (the start date is after the end date)")
            self.date_from = self.date_to = None
        self.type = q.get("type") or None
        if self.type is not None and not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", self.type):
            self.errors.append(f"资源类型无效 (no resource type {self.type!r})")
            self.type = None
        # a token naming an institution sees that institution only (the quality API's own rule)
        self.own = _scope(principal, None)
        self.institution = _scope(principal, q.get("institution") or None)

    def _day(self, v: str | None, name: str) -> str | None:
        if not v:
            return None
        if not DAY.match(v):
            self.errors.append(f"日期格式应为 YYYY-MM-DD ({name}: {v!r})")
            return None
        try:
            date.fromisoformat(v)
        except ValueError:
            self.errors.append(f"日期无效 ({name}: {v!r})")
            return None
        return v

    @staticmethod
    def _int(v: str | None) -> int | None:
        return int(v.replace("-", "")) if v else None

    @property
    def day_from(self) -> int | None:
        return self._int(self.date_from)

    @property
    def day_to(self) -> int | None:
        return self._int(self.date_to)

    def query(self, **extra: Any) -> str:
        from urllib.parse import urlencode

        pairs = {"from": self.date_from, "to": self.date_to, "institution": self.institution, "type": self.type,
                 **extra}
        return urlencode({k: v for k, v in pairs.items() if v not in (None, "")})


def _quality(request: Request) -> Any:
    svc = _node(request).ext.get("quality")
    if svc is None:
        raise FhirError(404, "The quality capability is not installed on this node", code="not-supported")
    return svc


def _unknown() -> str:
    """The quality engine's institution for records it could not attribute."""
    from phip.quality.engine import UNKNOWN

    return UNKNOWN


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The institutions below the threshold, worst first (lowest rate of any dimension)."""
    def worst(r: dict[str, Any]) -> tuple[float, int]:
        rates = [v for v in r["rates"].values() if v is not None]
        return (min(rates) if rates else 1.0, -r["received"])

    return sorted((r for r in rows if r["below"]), key=worst)


@router.get(f"{S.PREFIX}/quality", openapi_extra=QUALITY)
def quality(request: Request) -> Response:
    node = _node(request)
    if "quality" not in node.ext:
        return page(request, "missing.html", 404, active="quality")
    svc = _quality(request)
    f = Filters(request, _principal())
    sc = queries.scorecard(svc, day_from=f.day_from, day_to=f.day_to, institution=f.institution, rtype=f.type)
    days = queries.trend(svc, day_from=f.day_from, day_to=f.day_to, institution=f.institution, rtype=f.type)
    insts, types = queries.options(svc, f.own)
    repo = node.store.repository()
    names = queries.names(repo, "Organization", [*insts, *(r["institution"] for r in sc["institutions"])])
    names.setdefault(_unknown(), "未知机构 (no institution)")
    rates = sc["overall"]["rates"]
    if f.institution and len(sc["institutions"]) == 1:
        rates = sc["institutions"][0]["rates"]  # one institution: its own row, upload rate included
    chart = {
        "threshold": sc["threshold"],
        "dimensions": [{"key": d, "label": LABELS[d], "rate": rates.get(d)} for d in DIMENSIONS],
        "trend": days,
        "labels": LABELS,
    }
    ctx = dict(sc=sc, f=f, ranked=_ranked(sc["institutions"]), rates=rates, chart=chart, names=names,
               institutions=insts, types=types, active="quality")
    if _fragment(request, "scorecard"):
        return page(request, "_scorecard.html", **ctx)
    return page(request, "quality.html", **ctx)


@router.get(f"{S.PREFIX}/quality/institution/{{institution}}", openapi_extra=QUALITY)
def institution(request: Request, institution: str) -> Response:
    from phip.quality.api import _scope

    node = _node(request)
    if "quality" not in node.ext:
        return page(request, "missing.html", 404, active="quality")
    svc = _quality(request)
    p = _principal()
    inst: str = _scope(p, institution) or institution  # 403 for another institution than the token's own
    f = Filters(request, p)
    q = request.query_params
    dim = q.get("dimension") or None
    if dim is not None and dim not in DIMENSIONS:
        f.errors.append(f"维度无效 (no dimension {dim!r})")
        dim = None
    status = q.get("status") or None
    if status is not None and status not in STATUS:
        f.errors.append(f"状态无效 (no status {status!r})")
        status = None
    try:
        offset = max(0, int(q.get("offset") or 0))
    except ValueError:
        offset = 0
    rows, total = svc.findings(institution=inst, dimension=dim, status=status, resource=f.type,
                               day_from=f.day_from, day_to=f.day_to, count=PAGE, offset=offset)
    repo = node.store.repository()
    tasks = queries.tasks(repo, [r["task"] for r in rows if r["task"]])
    base = dict(f=f, inst=inst, dim=dim, fstatus=status, offset=offset, total=total, rows=rows, tasks=tasks,
                page_size=PAGE, active="quality")
    if _fragment(request, "findings"):
        return page(request, "_findings.html", **base)
    sc = queries.scorecard(svc, day_from=f.day_from, day_to=f.day_to, institution=inst, rtype=f.type)
    row = sc["institutions"][0] if sc["institutions"] else None
    summary = queries.rule_summary(svc, institution=inst, day_from=f.day_from, day_to=f.day_to, rtype=f.type)
    name = queries.names(repo, "Organization", [inst]).get(inst) or ("未知机构" if inst == _unknown() else None)
    return page(request, "institution.html", sc=sc, row=row, summary=summary, org_name=name, **base)
