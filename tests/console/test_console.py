"""The web console (/console): sessions, CSRF, access, and the scorecard page against the API
(SQLite and PostgreSQL)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from phip.cn import gb11643

ID_SYS = "urn:oid:2.16.156.10011.1.3"
BAD_ID = (lambda g: g[:17] + ("0" if g[17] != "0" else "1"))(gb11643.generate("510104", date(1980, 5, 17), 123))
HTML = {"Accept": "text/html,application/xhtml+xml"}
PASSWORD = "correct horse battery"


def _client(node: Any) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient

    from phip.api.app import create_app

    return TestClient(create_app(node), follow_redirects=False)


@pytest.fixture
def web(node: Any) -> Iterator[Any]:
    from phip.security.accounts import add_user

    with node.store.engine.begin() as conn:
        add_user(conn, "wang", PASSWORD, "manager")
    with _client(node) as c:
        yield c


def _csrf(c: Any) -> str:
    r = c.get("/console/login", headers=HTML)
    assert r.status_code == 200
    value = c.cookies.get("phip_console_csrf")
    assert value and f'value="{value}"' in r.text
    return str(value)


def _login_token(c: Any, token: str, nxt: str = "/console/") -> Any:
    return c.post("/console/login", data={"csrf": _csrf(c), "token": token, "next": nxt})


def _admin(c: Any, node: Any) -> None:
    r = _login_token(c, node.tokens.issue("admin", "test-admin"))
    assert r.status_code == 303, r.text


def _org(c: Any, node: Any, oid: str) -> None:
    h = {"Authorization": f"Bearer {node.tokens.issue('admin', 'loader')}"}
    r = c.put(f"/fhir/Organization/{oid}", json={"resourceType": "Organization", "id": oid, "name": f"医院{oid}"},
              headers=h)
    assert r.status_code in (200, 201), r.text


def _defects(c: Any, node: Any) -> None:
    """Two institutions, ten Patients each; one bad ID number at h1 (the quality test's world)."""
    h = {"Authorization": f"Bearer {node.tokens.issue('admin', 'loader')}"}
    _org(c, node, "h1")
    _org(c, node, "h2")
    for i in range(10):
        nid = gb11643.generate("510104", date(1980, 5, 17), 101 + 2 * i)
        for org, pid in (("h1", f"a{i}"), ("h2", f"b{i}")):
            p = {"resourceType": "Patient", "id": pid, "identifier": [{"system": ID_SYS,
                                                                      "value": BAD_ID if pid == "a0" else nid}],
                 "name": [{"text": f"王{'一二三四五六七八九十'[i]}明"}], "gender": "male", "birthDate": "1980-05-17",
                 "telecom": [{"system": "phone", "value": "13800001111"}], "address": [{"text": "四川省成都市锦江区"}],
                 "managingOrganization": {"reference": f"Organization/{org}"}}
            r = c.put(f"/fhir/Patient/{pid}", json=p, headers=h)
            assert r.status_code == 201, r.text


def _chart(text: str) -> dict[str, Any]:
    m = re.search(r"<div id=\"chart-data\" hidden data-chart='(.*?)'></div>", text, re.S)
    assert m, text[:2000]
    return json.loads(html.unescape(m.group(1)))  # type: ignore[no-any-return]


def _kpis(text: str) -> dict[str, str]:
    return dict(re.findall(r'data-dimension="(\w+)">\s*<div class="k">.*?</div>\s*<div class="v">([^<]*)</div>',
                           text, re.S))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.2f}%"


def _cookie(r: Any, name: str) -> str:
    return next(v for v in r.headers.get_list("set-cookie") if v.startswith(f"{name}="))


def test_login_logout_and_redirects(web: Any) -> None:
    # no session: a browser is sent to the login page, an API client gets the API's 401
    r = web.get("/console/quality?institution=h1", headers=HTML)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?next=%2Fconsole%2Fquality%3Finstitution%3Dh1"
    assert web.get("/console/").status_code == 401
    r = web.get("/console/", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["hx-redirect"].startswith("/console/login?next=")
    # a wrong password: the login page again, with the reason, and no session
    csrf = _csrf(web)
    r = web.post("/console/login", data={"csrf": csrf, "username": "wang", "password": "wrong"})
    assert r.status_code == 401 and "登录失败" in r.text and "phip_console=" not in r.headers.get("set-cookie", "")
    r = web.post("/console/login", data={"csrf": csrf, "username": "wang", "password": PASSWORD,
                                         "next": "/console/quality"})
    assert r.status_code == 303 and r.headers["location"] == "/console/quality"
    session = _cookie(r, "phip_console")
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=900"):
        assert attr in session, session
    assert web.cookies.get("phip_console_csrf") != csrf  # a new CSRF value for the session
    r = web.get("/console/", headers=HTML)
    assert r.status_code == 200 and "test" in r.text and "wang" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    # a next that leaves the console (or goes back to the login page) is ignored
    for nxt in ("//evil.example/x", "https://evil.example/console/", "/console/login?next=/console/"):
        r = web.post("/console/login", data={"csrf": web.cookies.get("phip_console_csrf"), "username": "wang",
                                             "password": PASSWORD, "next": nxt})
        assert r.status_code == 303 and r.headers["location"] == "/console/", nxt
    # logout clears the session; the next page asks for a login again
    r = web.post("/console/logout", data={"csrf": web.cookies.get("phip_console_csrf")})
    assert r.status_code == 303 and r.headers["location"] == "/console/login?logged_out=1"
    assert "Max-Age=0" in _cookie(r, "phip_console")
    assert web.get("/console/", headers=HTML).status_code == 303


def test_token_login_and_expiry(web: Any, node: Any) -> None:
    r = _login_token(web, "not-a-token")
    assert r.status_code == 401 and "令牌无效" in r.text
    assert web.get("/console/", headers=HTML).status_code == 303
    r = _login_token(web, node.tokens.issue("admin", "ops", ttl=600), "/console/quality")
    assert r.status_code == 303 and r.headers["location"] == "/console/quality"
    age = int(re.search(r"Max-Age=(\d+)", _cookie(r, "phip_console")).group(1))  # type: ignore[union-attr]
    assert 590 <= age <= 600  # the cookie ends with the token
    assert web.get("/console/quality", headers=HTML).status_code == 200
    # an expired token in the cookie: back to the login page, told why, the cookie dropped
    web.cookies.set("phip_console", node.tokens.issue("admin", "ops", ttl=-60), path="/console")
    r = web.get("/console/", headers=HTML)
    assert r.status_code == 303 and r.headers["location"].endswith("&expired=1")
    assert "Max-Age=0" in _cookie(r, "phip_console")
    # an expired token cannot be pasted either
    assert _login_token(web, node.tokens.issue("admin", "ops", ttl=-60)).status_code == 401


def test_csrf_is_required(web: Any, node: Any) -> None:
    csrf = _csrf(web)
    form = {"username": "wang", "password": PASSWORD}
    for data, headers in (
        (form, {}),                                               # no CSRF field
        ({**form, "csrf": "forged"}, {}),                         # not the cookie's value
        ({**form, "csrf": csrf}, {"Origin": "https://evil.example"}),  # another site
    ):
        r = web.post("/console/login", data=data, headers=headers)
        assert r.status_code == 403, r.text
        assert "phip_console=" not in r.headers.get("set-cookie", "")
    _admin(web, node)
    # logout without the CSRF value does nothing
    r = web.post("/console/logout", data={})
    assert r.status_code == 403
    assert web.get("/console/", headers=HTML).status_code == 200
    r = web.post("/console/logout", data={"csrf": web.cookies.get("phip_console_csrf")},
                 headers={"Origin": "http://testserver"})
    assert r.status_code == 303


def test_roles_see_what_they_may(web: Any, node: Any) -> None:
    _defects(web, node)
    # a role without quality access: a clear 403 page naming the rule, and no quality link
    _login_token(web, node.tokens.issue("insurer", "ins", org="Organization/h2"))
    r = web.get("/console/quality", headers=HTML)
    assert r.status_code == 403 and "无权访问" in r.text and "route-roles" in r.text
    assert "<html" in r.text and "canary" not in r.text
    r = web.get("/console/quality/institution/h1", headers={"HX-Request": "true", "HX-Target": "findings"})
    assert r.status_code == 403 and "<html" not in r.text and "无权访问" in r.text
    r = web.get("/console/", headers=HTML)
    assert r.status_code == 200 and "数据质量（无权限）" in r.text
    # a manager sees directory counts only, not the change feed; an admin sees both
    _login_token(web, node.tokens.issue("manager", "mgr"))
    r = web.get("/console/", headers=HTML)
    assert r.status_code == 200 and "<td>Organization</td>" in r.text and "<td>Patient</td>" not in r.text
    assert "变更流仅对管理员" in r.text and 'href="/console/quality"' in r.text
    _admin(web, node)
    r = web.get("/console/", headers=HTML)
    counts = dict(re.findall(r"<tr><td>(\w+)</td><td class=\"n\">([\d,]+)</td></tr>", r.text))
    assert counts["Patient"] == "20" and counts["Organization"] == "2"
    assert "<code>Patient/b9</code>" in r.text  # the last change first
    assert r.text.index("Patient/b9") < r.text.index("Patient/a9")
    # a token naming an institution sees that institution only, as in the quality API
    _login_token(web, node.tokens.issue("clinician", "dr", org="Organization/h2"))
    r = web.get("/console/quality", headers=HTML)
    assert r.status_code == 200
    assert [x["institution"] for x in _rows(r.text)] == ["h2"]
    assert web.get("/console/quality/institution/h1", headers=HTML).status_code == 403
    assert web.get("/console/quality?institution=h1", headers=HTML).status_code == 403


def _rows(text: str) -> list[dict[str, Any]]:
    """The rows of the 'all institutions' table."""
    part = text[text.index("<summary>全部机构"):]
    out = []
    for tr in re.findall(r"<tr>\s*<td>(.*?)</tr>", part, re.S):
        inst = re.search(r"/quality/institution/([^?\"]+)", tr)
        cells = re.findall(r'<td class="n[^"]*">([^<]*)</td>', tr)
        out.append({"institution": inst.group(1) if inst else None, "cells": cells})
    return out


def test_scorecard_page_shows_the_api_figures(web: Any, node: Any) -> None:
    _defects(web, node)
    api = web.get("/quality/scorecard", headers={"Authorization": f"Bearer {node.tokens.issue('admin', 'a')}"}).json()
    assert api["below"] == ["h1"]
    _admin(web, node)
    r = web.get("/console/quality", headers=HTML)
    assert r.status_code == 200
    chart = _chart(r.text)
    assert chart["threshold"] == api["threshold"] == 0.98
    for d in chart["dimensions"]:
        assert d["rate"] == api["overall"]["rates"].get(d["key"]), d
    kpis = _kpis(r.text)
    assert kpis["conformance"] == _pct(api["overall"]["rates"]["conformance"]) != "100.00%"
    assert kpis["upload"] == "–"  # per institution only
    # the ranked table lists h1 only; the full table has every institution with the API's rates
    ranked = r.text[r.text.index("低于达标线的机构"):r.text.index("<summary>全部机构")]
    assert "医院h1" in ranked and "医院h2" not in ranked
    rows = {x["institution"]: x["cells"] for x in _rows(r.text)}
    for inst in api["institutions"]:
        want = [f"{inst['received']:,}", *(_pct(inst["rates"][d]) for d in
                                          ("completeness", "conformance", "consistency", "timeliness", "uniqueness",
                                           "upload"))]
        assert rows[inst["institution"]] == want
    # one institution: its own row, with its upload rate, is what the chart shows
    one = web.get("/quality/scorecard?institution=h1",
                  headers={"Authorization": f"Bearer {node.tokens.issue('admin', 'a')}"}).json()
    r = web.get("/console/quality?institution=h1", headers=HTML)
    assert {d["key"]: d["rate"] for d in _chart(r.text)["dimensions"]} == one["institutions"][0]["rates"]
    # the trend: one receipt day, with the overall rates
    trend = _chart(r.text)["trend"]
    assert len(trend) == 1 and trend[0]["received"] == 11
    assert abs(trend[0]["rates"]["conformance"] - 10 / 11) < 1e-12


def test_htmx_fragments_return_the_filtered_rows(web: Any, node: Any) -> None:
    _defects(web, node)
    _admin(web, node)
    hx = {"HX-Request": "true", "HX-Target": "scorecard"}
    r = web.get("/console/quality?institution=h2", headers=hx)
    assert r.status_code == 200 and "<html" not in r.text and 'id="chart-data"' in r.text
    assert [x["institution"] for x in _rows(r.text)] == ["h2"]
    # by resource type: the same counters, Patients only (the Organization records drop out)
    r = web.get("/console/quality?type=Patient&institution=h1", headers=hx)
    rows = _rows(r.text)
    assert rows == [{"institution": "h1", "cells": ["10", "100.00%", "90.00%", "100.00%", "100.00%", "100.00%", "–"]}]
    r = web.get("/console/quality?type=Organization", headers=hx)
    assert {x["institution"]: x["cells"][2] for x in _rows(r.text)} == {"h1": "100.00%", "h2": "100.00%"}
    # a date range with no uploads: nothing
    r = web.get("/console/quality?from=2001-01-01&to=2001-01-31", headers=hx)
    assert _rows(r.text) == [] and _kpis(r.text)["conformance"] == "–"
    # bad input is reported and dropped, never a crash
    r = web.get("/console/quality?from=yesterday&type=bad%20type", headers=hx)
    assert r.status_code == 200 and "日期格式应为" in r.text and "资源类型无效" in r.text
    # the drill-down: findings (rule, dimension, element, status) and their Tasks, paged
    r = web.get("/console/quality/institution/h1", headers=HTML)
    assert r.status_code == 200 and "conformance.Patient.id-number" in r.text and "医院h1" in r.text
    fx = {"HX-Request": "true", "HX-Target": "findings"}
    r = web.get("/console/quality/institution/h1?dimension=conformance&status=open", headers=fx)
    assert r.status_code == 200 and "<html" not in r.text
    body = html.unescape(r.text)
    assert "<code>Patient/a0</code>" in body and "<code>Patient.identifier</code>" in body
    assert "Task/qf-" in body and "已下发" in body  # the Task, requested
    assert web.get("/console/quality/institution/h1?status=resolved", headers=fx).text.count("<tr>") == 0
    assert web.get("/console/quality/institution/h2", headers=fx).text.count("<tr>") == 0


def test_type_scorecards_add_up_to_the_service_scorecard(web: Any, node: Any) -> None:
    """The console's per-type figures sum the same counters as the quality service."""
    from phip.console import queries

    _defects(web, node)
    svc = node.ext["quality"]
    whole = svc.scorecard()
    got: dict[str, dict[str, int]] = {}
    _insts, types = queries.options(svc, None)
    assert {"Organization", "Patient"} <= set(types)
    for t in types:
        for row in queries.scorecard(svc, day_from=None, day_to=None, institution=None, rtype=t)["institutions"]:
            acc = got.setdefault(row["institution"], {"received": 0})
            acc["received"] += row["received"]
            for d, n in row["failing"].items():
                acc[d] = acc.get(d, 0) + n
    assert got == {r["institution"]: {"received": r["received"], **r["failing"]} for r in whole["institutions"]}


def test_pages_work_without_the_chart_library(web: Any, node: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PHIP_CACHE", str(tmp_path / "empty-cache"))
    _defects(web, node)
    assert web.get("/console/static/echarts.min.js").status_code == 404
    r = web.get("/console/static/console.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    api = web.get("/quality/scorecard", headers={"Authorization": f"Bearer {node.tokens.issue('admin', 'a')}"}).json()
    _admin(web, node)
    r = web.get("/console/quality", headers=HTML)
    assert r.status_code == 200 and "图表不可用" in r.text
    assert _kpis(r.text)["conformance"] == _pct(api["overall"]["rates"]["conformance"]) != "100.00%"
