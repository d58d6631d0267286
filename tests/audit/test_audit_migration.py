"""audit_0002 on a node that already has a trail: rows written as text stay readable and verifiable,
new rows are packed, and the downgrade unpacks them (nothing of the trail is lost).  Both backends."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command

from phip.audit import chain
from phip.audit import events as E
from phip.audit.schema import audit_events as AE
from phip.store.db import alembic_config


def _alembic(engine: sa.Engine, fn: Any, rev: str) -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        fn(cfg, rev)


def _pending(i: int) -> E.Pending:
    return E.Pending(1_767_225_600_000_000 + i, "read", 0, f"p{i}", f"Observation/o{i}", None, "dr-test", "doctor",
                     "Organization/org-1", None, "TREAT", None, "127.0.0.1")


def test_rows_written_as_text_survive_the_upgrade_and_the_downgrade_unpacks(empty_db_url: str) -> None:
    engine = sa.create_engine(empty_db_url)
    try:
        _alembic(engine, command.upgrade, "audit_0001")
        # two records as a node before audit_0002 wrote them: the JSON as text
        h, rows = chain.GENESIS, []
        for seq in (1, 2):
            content = chain.canonical(E.to_fhir(seq, _pending(seq), "old node"))
            nh = chain.link(h, content)
            rows.append({"seq": seq, "recorded": _pending(seq).recorded, "kind": "read", "action": "R", "outcome": 0,
                         "patient": f"p{seq}", "who": "dr-test", "role": "doctor", "org": "Organization/org-1",
                         "purpose": "TREAT", "source": "127.0.0.1", "content": content.decode(), "prev_hash": h,
                         "hash": nh})
            h = nh
        old = sa.table("audit_events", *(sa.column(k) for k in rows[0]))
        with engine.begin() as conn:
            conn.execute(old.insert(), rows)
            conn.execute(sa.text("INSERT INTO audit_head (id, last_seq, last_hash, anchor_seq, anchor_hash, archives) "
                                 "VALUES (1, 2, :h, 0, :g, '[]')"), {"h": h, "g": chain.GENESIS})
        _alembic(engine, command.upgrade, "heads")
        # appended after the upgrade: packed, in the same chain
        assert chain.append(engine, [_pending(3)], "new node", None) == 3
        with engine.connect() as conn:
            recs = conn.execute(sa.select(AE).order_by(AE.c.seq)).all()
        assert [(r.content is None, r.zcontent is None) for r in recs] == [(False, True), (False, True), (True, False)]
        assert chain.content_of(recs[0]).decode() == rows[0]["content"]
        v = chain.verify(engine, {})
        assert v.ok and v.checked == 3, v.message()
        packed = chain.content_of(recs[2])
        _alembic(engine, command.downgrade, "audit_0001")
        with engine.connect() as conn:
            back = conn.execute(sa.text("SELECT seq, content FROM audit_events ORDER BY seq")).all()
        assert [r.content for r in back] == [rows[0]["content"], rows[1]["content"], packed.decode()]
    finally:
        engine.dispose()
