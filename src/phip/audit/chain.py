"""The hash chain: appending a batch, signed checkpoints, verification, archiving a prefix.

Record ``n`` carries ``prev_hash`` = ``hash`` of record ``n-1`` (the anchor for the first record
kept) and ``hash = sha256(prev_hash || content)``; ``content`` is the AuditEvent JSON with sorted
keys whose ``id`` is ``n``.  A checkpoint signs (seq, hash) with the node's Ed25519 key.

:func:`verify` walks the chain from the anchor and names the first record that is wrong: one
whose content was edited (its hash no longer matches, or — if the hash was recomputed — the next
record no longer links to it), one missing (a gap in the sequence), one out of place (its
content names another position), a searchable column that disagrees with the content, a
checkpoint whose signature or hash does not match, or a chain shorter than its head says.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine

from phip.audit import events as E
from phip.audit.packing import pack, unpack
from phip.audit.schema import audit_checkpoints as CP
from phip.audit.schema import audit_events as AE
from phip.audit.schema import audit_head as HEAD
from phip.fhir.datetimes import now_us
from phip.security.keys import SigningKey
from phip.store.repository import executemany

GENESIS = "0" * 64
COLUMNS = ("seq", "recorded", "kind", "action", "outcome", "patient", "who", "role", "org", "purpose", "source",
           "zcontent", "prev_hash", "hash")
BATCH = 2000


def link(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + content).hexdigest()


def canonical(ev: dict[str, Any]) -> bytes:
    return orjson.dumps(ev, option=orjson.OPT_SORT_KEYS)


def content_of(rec: Any) -> bytes:
    """The AuditEvent JSON of a stored record (a row with ``content`` and ``zcontent``): packed, or
    as text in rows written before the trail was stored packed."""
    if rec.zcontent is not None:
        return unpack(rec.zcontent)
    if rec.content is None:
        raise ValueError("the record holds no content")
    return str(rec.content).encode()


def checkpoint_message(seq: int, hsh: str, signed_at: int) -> bytes:
    return f"phip-audit-checkpoint|{seq}|{hsh}|{signed_at}".encode()


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@dataclass(slots=True)
class Head:
    last_seq: int
    last_hash: str
    anchor_seq: int
    anchor_hash: str
    archives: list[str]


def _lock_head(conn: Connection) -> Head:
    q = sa.select(HEAD).where(HEAD.c.id == 1)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None:
        if conn.dialect.name == "postgresql":  # two first writers: one inserts, the other waits on it
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7248113)")
            row = conn.execute(q).first()
        if row is None:
            conn.execute(HEAD.insert().values(id=1, last_seq=0, last_hash=GENESIS, anchor_seq=0,
                                              anchor_hash=GENESIS, archives="[]"))
            return Head(0, GENESIS, 0, GENESIS, [])
    return Head(row.last_seq, row.last_hash, row.anchor_seq, row.anchor_hash, json.loads(row.archives))


def read_head(conn: Connection) -> Head:
    row = conn.execute(sa.select(HEAD).where(HEAD.c.id == 1)).first()
    if row is None:
        return Head(0, GENESIS, 0, GENESIS, [])
    return Head(row.last_seq, row.last_hash, row.anchor_seq, row.anchor_hash, json.loads(row.archives))


def sign_checkpoint(conn: Connection, key: SigningKey, seq: int, hsh: str) -> None:
    at = now_us()
    sig = key.private.sign(checkpoint_message(seq, hsh, at))
    conn.execute(CP.insert().values(seq=seq, hash=hsh, signed_at=at, kid=key.kid, signature=_b64(sig)))


def append(engine: Engine, pending: list[E.Pending], node_name: str, key: SigningKey | None, *,
           checkpoint_every: int = 1000, checkpoint_seconds: float = 60.0) -> int:
    """Append a batch to the chain in one transaction (serialised across processes); returns the
    last sequence number.  A checkpoint is signed when ``checkpoint_every`` records or
    ``checkpoint_seconds`` have passed since the last one."""
    if not pending:
        return 0
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        head = _lock_head(conn)
        seq, h = head.last_seq, head.last_hash
        rows: list[tuple[Any, ...]] = []
        for p in pending:
            seq += 1
            content = canonical(E.to_fhir(seq, p, node_name))
            nh = link(h, content)
            rows.append((seq, p.recorded, p.kind, E.action_of(p.kind), p.outcome, p.patient,
                         (p.who or "")[:200] or None, p.role, (p.org or "")[:100] or None, p.purpose, p.source,
                         pack(content), h, nh))
            h = nh
        executemany(conn, AE, COLUMNS, rows)
        conn.execute(HEAD.update().where(HEAD.c.id == 1).values(last_seq=seq, last_hash=h))
        if key is not None:
            last = conn.execute(sa.select(CP.c.seq, CP.c.signed_at).order_by(CP.c.seq.desc()).limit(1)).first()
            last_seq, last_at = (last.seq, last.signed_at) if last else (head.anchor_seq, 0)
            if seq - last_seq >= checkpoint_every or now_us() - last_at >= checkpoint_seconds * 1e6:
                sign_checkpoint(conn, key, seq, h)
    return seq


# -- verification ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Verdict:
    ok: bool
    checked: int
    first_bad: int | None = None
    reason: str = ""
    checkpoints: int = 0
    last_seq: int = 0

    def message(self) -> str:
        if self.ok:
            return (f"audit chain intact: {self.checked} records up to {self.last_seq}, "
                    f"{self.checkpoints} signed checkpoints verified")
        return f"audit chain BROKEN at record {self.first_bad}: {self.reason}"


def _records(conn: Connection, after: int) -> Iterator[Any]:
    last = after
    while True:
        recs = conn.execute(sa.select(AE).where(AE.c.seq > last).order_by(AE.c.seq).limit(BATCH)).all()
        if not recs:
            return
        yield from recs
        last = recs[-1].seq


def verify(engine: Engine, public_keys: dict[str, Ed25519PublicKey],
           progress: Callable[[int], None] | None = None) -> Verdict:
    """Check the whole chain; the verdict names the first bad record."""
    with engine.connect() as conn:
        head = read_head(conn)
        cps: dict[int, Any] = {r.seq: r for r in conn.execute(sa.select(CP).order_by(CP.c.seq))}
        # signatures first: a checkpoint that does not verify makes its record suspect
        for cp in cps.values():
            pk = public_keys.get(cp.kid)
            if pk is None:
                return Verdict(False, 0, cp.seq, f"checkpoint {cp.seq} is signed by key {cp.kid}, "
                               "which is not among this node's keys")
            try:
                pk.verify(_unb64(cp.signature), checkpoint_message(cp.seq, cp.hash, cp.signed_at))
            except (InvalidSignature, ValueError):
                return Verdict(False, 0, cp.seq, f"the signature of checkpoint {cp.seq} does not verify")
        if head.anchor_seq and (head.anchor_seq not in cps or cps[head.anchor_seq].hash != head.anchor_hash):
            return Verdict(False, 0, head.anchor_seq + 1,
                           f"the chain's anchor (record {head.anchor_seq}, archived) is not a signed checkpoint")
        expect_seq, h = head.anchor_seq + 1, head.anchor_hash
        checked = 0
        prev: Any = None
        prev_content = b""
        n_cp = 0
        rec: Any
        for rec in _records(conn, head.anchor_seq):
            if rec.seq != expect_seq:
                return Verdict(False, checked, expect_seq,
                               f"record {expect_seq} is missing (the next record kept is {rec.seq})")
            try:
                content = content_of(rec)
                ev = orjson.loads(content)
            except ValueError:  # (orjson.JSONDecodeError too)
                return Verdict(False, checked, rec.seq, f"record {rec.seq} is damaged: it is not an AuditEvent's JSON")
            if ev.get("id") != str(rec.seq):
                return Verdict(False, checked, rec.seq,
                               f"record {rec.seq} is out of place: its content is record {ev.get('id')}")
            if rec.prev_hash != h:
                if prev is not None and link(prev.prev_hash, prev_content) == prev.hash:
                    # the previous record is self-consistent but is not what this one was linked to:
                    # it was edited and its hash recomputed
                    return Verdict(False, checked, prev.seq,
                                   f"record {prev.seq} was changed: record {rec.seq} links to another hash")
                return Verdict(False, checked, rec.seq, f"record {rec.seq} does not link to record {rec.seq - 1}")
            if link(rec.prev_hash, content) != rec.hash:
                return Verdict(False, checked, rec.seq, f"record {rec.seq} was changed: its content does not match "
                               "its hash")
            cols = E.columns(ev)
            for name in ("action", "outcome", "patient", "who", "role", "purpose", "source"):
                if getattr(rec, name) != cols[name]:
                    return Verdict(False, checked, rec.seq,
                                   f"record {rec.seq}: column {name} ({getattr(rec, name)!r}) was changed "
                                   f"(the signed content says {cols[name]!r})")
            cp = cps.get(rec.seq)
            if cp is not None:
                if cp.hash != rec.hash:
                    return Verdict(False, checked, rec.seq,
                                   f"record {rec.seq} does not match the signed checkpoint at {rec.seq}")
                n_cp += 1
            h = rec.hash
            prev, prev_content = rec, content
            expect_seq += 1
            checked += 1
            if progress is not None and checked % 1000 == 0:
                progress(checked)
        last = expect_seq - 1
        beyond = [s for s in cps if s > last]
        if beyond:
            return Verdict(False, checked, last + 1,
                           f"records from {last + 1} on are missing (a signed checkpoint covers record {max(beyond)})")
        if last != head.last_seq or h != head.last_hash:
            return Verdict(False, checked, last + 1 if last < head.last_seq else last,
                           f"the chain ends at record {last} but its head says {head.last_seq}")
        return Verdict(True, checked, None, "", n_cp, last)


# -- archiving ------------------------------------------------------------------------------------
def archive(engine: Engine, key: SigningKey, folder: Path, *, before_us: int | None = None,
            upto: int | None = None) -> tuple[Path, int, int] | None:
    """Move the oldest records (recorded before ``before_us``, or up to seq ``upto``) to a signed
    gzip NDJSON file in ``folder``, delete them, and anchor the chain at the last one archived
    (which gets a signed checkpoint).  Returns (file, first seq, last seq), or None if nothing to do."""
    folder.mkdir(parents=True, exist_ok=True)
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        head = _lock_head(conn)
        q = sa.select(sa.func.max(AE.c.seq))
        if before_us is not None:
            q = q.where(AE.c.recorded < before_us)
        if upto is not None:
            q = q.where(AE.c.seq <= upto)
        last = conn.execute(q).scalar()
        if last is None or last <= head.anchor_seq:
            return None
        first = head.anchor_seq + 1
        path = folder / f"audit-{first:012d}-{last:012d}.ndjson.gz"
        digest = hashlib.sha256()
        last_hash = head.anchor_hash
        with gzip.open(path, "wb") as f:
            for rec in _records(conn, head.anchor_seq):
                if rec.seq > last:
                    break
                line = orjson.dumps({"seq": rec.seq, "prev_hash": rec.prev_hash, "hash": rec.hash,
                                     "content": content_of(rec).decode()}) + b"\n"
                digest.update(line)
                f.write(line)
                last_hash = rec.hash
        if not conn.execute(sa.select(CP.c.seq).where(CP.c.seq == last)).first():
            sign_checkpoint(conn, key, last, last_hash)
        at = now_us()
        manifest = {"first": first, "last": last, "anchor_in": head.anchor_hash, "last_hash": last_hash,
                    "sha256": digest.hexdigest(), "signed_at": at, "kid": key.kid}
        manifest["signature"] = _b64(key.private.sign(canonical(manifest)))
        path.with_suffix("").with_suffix(".manifest.json").write_bytes(
            orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        conn.execute(AE.delete().where(AE.c.seq <= last))
        conn.execute(HEAD.update().where(HEAD.c.id == 1).values(
            anchor_seq=last, anchor_hash=last_hash, archives=json.dumps([*head.archives, path.name])))
    return path, first, last


def verify_archive(path: Path, public_keys: dict[str, Ed25519PublicKey]) -> Verdict:
    """Check an archive file against its signed manifest and its own chain links."""
    mpath = path.with_suffix("").with_suffix(".manifest.json")
    if not mpath.exists():
        return Verdict(False, 0, None, f"{mpath.name} (the signed manifest) is missing")
    manifest = orjson.loads(mpath.read_bytes())
    sig = manifest.pop("signature", "")
    pk = public_keys.get(manifest.get("kid", ""))
    try:
        if pk is None:
            raise InvalidSignature
        pk.verify(_unb64(sig), canonical(manifest))
    except (InvalidSignature, ValueError):
        return Verdict(False, 0, None, f"the manifest {mpath.name} is not signed by this node")
    digest = hashlib.sha256()
    h, expect, n = manifest["anchor_in"], manifest["first"], 0
    with gzip.open(path, "rb") as f:
        for line in f:
            digest.update(line)
            rec = orjson.loads(line)
            if rec["seq"] != expect:
                return Verdict(False, n, expect, f"record {expect} is missing from the archive")
            if rec["prev_hash"] != h or link(h, rec["content"].encode()) != rec["hash"]:
                return Verdict(False, n, rec["seq"], f"archived record {rec['seq']} was changed")
            h = rec["hash"]
            expect += 1
            n += 1
    if digest.hexdigest() != manifest["sha256"] or h != manifest["last_hash"]:
        return Verdict(False, n, expect, "the archive does not match its signed manifest")
    return Verdict(True, n, None, "", 0, manifest["last"])
