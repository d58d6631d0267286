"""The electronic health code (电子健康码): cards, signed QR payloads, verification, revocation.

- One card per resident (master ``Person``): ``$health-card`` issues a card number the first time
  and re-uses it afterwards; each call returns a fresh QR payload.
- The card number is random (node region + 13 random digits + a Luhn check digit): it says nothing
  about the holder.
- The QR payload is a compact JWS (``alg: EdDSA``, the node's newest signing key, ``kid`` set) whose
  claims are only ``iss`` (the node), ``use: health-card``, ``hc`` (card number), ``iat``, ``exp``
  and ``jti`` — no name, ID number, birth date or Person id.  It cannot be used as an API bearer token
  (no ``role``), and an API token is not a QR payload (no ``use``).
- ``verify`` checks signature, issuer, expiry, the card's status and the Person: a revoked card
  fails with 410 and says when and why.
"""

from __future__ import annotations

import io
import secrets
import time
import uuid
from typing import Any

import jwt
import sqlalchemy as sa

from phip.fhir.datetimes import now_us, to_instant
from phip.fhir.errors import FhirError
from phip.registry.schema import health_card as HC

USE = "health-card"
DEFAULT_TTL = 600
MAX_TTL = 86400


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    return number.isdigit() and len(number) > 1 and luhn_digit(number[:-1]) == number[-1]


def _err(status: int, msg: str, msg_id: str, code: str = "invalid", expression: str | None = None) -> FhirError:
    return FhirError(status, msg, code=code, msg_id=msg_id, expression=expression)


class HealthCards:
    def __init__(self, store: Any, tokens: Any, region: str) -> None:
        self.store = store
        self.tokens = tokens
        self.region = (region or "000000")[:6].ljust(6, "0")

    # -- issue ------------------------------------------------------------------------------------
    def issue(self, repo: Any, person_id: str, issued_by: str, ttl: int = DEFAULT_TTL) -> dict[str, Any]:
        if ttl < 30 or ttl > MAX_TTL:
            raise _err(400, f"ttl must be between 30 and {MAX_TTL} seconds", "PHIP-4670", expression="ttl")
        person = repo.read("Person", person_id).resource()
        if person.get("active") is False:
            raise _err(409, f"Person/{person_id} is inactive (deceased or merged): no health card is issued",
                       "PHIP-4671", "business-rule")
        with self.store.write_tx() as tx:
            rec = tx.conn.execute(sa.select(HC.c.card_no).where(HC.c.person_id == person_id,
                                                                HC.c.status == "active")).first()
            created = rec is None
            if rec is None:
                card_no = self._new_number(tx.conn)
                tx.conn.execute(HC.insert().values(card_no=card_no, person_id=person_id, status="active",
                                                   issued_at=now_us(), issued_by=issued_by[:200]))
            else:
                card_no = rec.card_no
        token, exp = self.sign(card_no, ttl)
        return {"cardNumber": card_no, "token": token, "expires": exp, "created": created, "person": person_id}

    def _new_number(self, conn: sa.Connection) -> str:
        for _ in range(10):
            body = self.region + "".join(secrets.choice("0123456789") for _ in range(13))
            number = body + luhn_digit(body)
            if conn.execute(sa.select(HC.c.card_no).where(HC.c.card_no == number)).first() is None:
                return number
        raise RuntimeError("could not draw an unused health-card number")  # pragma: no cover

    def sign(self, card_no: str, ttl: int) -> tuple[str, str]:
        now = int(time.time())
        claims = {"iss": self.tokens.issuer, "use": USE, "hc": card_no, "iat": now, "exp": now + ttl,
                  "jti": uuid.uuid4().hex[:16]}
        key = self.tokens.keys[0]
        token = jwt.encode(claims, key.private, algorithm="EdDSA", headers={"kid": key.kid})
        return token, to_instant((now + ttl) * 1_000_000)

    # -- verify -----------------------------------------------------------------------------------
    def verify(self, repo: Any, token: str) -> tuple[dict[str, Any], str]:
        """The Person holding the card of a QR payload, and the card number; FhirError otherwise."""
        token = (token or "").strip()
        if not token:
            raise _err(400, "No QR payload given", "PHIP-4672", expression="token")
        try:
            header = jwt.get_unverified_header(token)
            key = self.tokens.by_kid.get(header.get("kid", ""))
            if key is None:
                raise _err(422, "The QR code was not signed by this node", "PHIP-4672", expression="token")
            claims = jwt.decode(token, key.public, algorithms=["EdDSA"], issuer=self.tokens.issuer,
                                options={"require": ["exp", "iat", "hc"]})
        except jwt.ExpiredSignatureError:
            raise _err(422, "The QR code has expired: ask the resident to refresh it", "PHIP-4673", "expired",
                       "token") from None
        except jwt.PyJWTError as e:
            raise _err(422, f"The QR code is not a valid health code of this node: {e}", "PHIP-4672",
                       expression="token") from None
        if claims.get("use") != USE:
            raise _err(422, "The token is not a health-card QR payload", "PHIP-4672", expression="token")
        card_no = str(claims["hc"])
        with self.store.read_conn() as conn:
            rec = conn.execute(sa.select(HC).where(HC.c.card_no == card_no)).first()
        if rec is None:
            raise _err(404, f"Health card {card_no} is not known on this node", "PHIP-4675", "not-found")
        if rec.status != "active":
            when = to_instant(rec.revoked_at) if rec.revoked_at else "an unknown date"
            raise _err(410, f"Health card {card_no} was revoked on {when}"
                       + (f" ({rec.reason})" if rec.reason else "") + ": it cannot be used", "PHIP-4674", "deleted")
        from phip.core.access import as_system

        try:
            with as_system():  # the card its holder presents authorizes this identity look-up
                person = self.store.repository().read("Person", rec.person_id).resource()
        except FhirError:
            raise _err(410, f"The holder of health card {card_no} is no longer on this node", "PHIP-4676",
                       "deleted") from None
        if person.get("active") is False:
            raise _err(410, f"The holder of health card {card_no} is inactive (deceased or merged)", "PHIP-4676",
                       "deleted")
        return person, card_no

    # -- revoke -----------------------------------------------------------------------------------
    def revoke(self, card_no: str, reason: str, by: str) -> dict[str, Any]:
        with self.store.write_tx() as tx:
            rec = tx.conn.execute(sa.select(HC).where(HC.c.card_no == card_no)).first()
            if rec is None:
                raise _err(404, f"Health card {card_no} is not known on this node", "PHIP-4675", "not-found")
            if rec.status == "revoked":
                return {"cardNumber": card_no, "status": "revoked", "changed": False}
            tx.conn.execute(HC.update().where(HC.c.card_no == card_no).values(
                status="revoked", revoked_at=now_us(), revoked_by=by[:200], reason=(reason or "")[:500] or None))
        return {"cardNumber": card_no, "status": "revoked", "changed": True, "person": rec.person_id}

    def revoke_person(self, person_id: str, reason: str, by: str) -> list[str]:
        with self.store.write_tx() as tx:
            nos = [r.card_no for r in tx.conn.execute(
                sa.select(HC.c.card_no).where(HC.c.person_id == person_id, HC.c.status == "active"))]
            if nos:
                tx.conn.execute(HC.update().where(HC.c.card_no.in_(nos)).values(
                    status="revoked", revoked_at=now_us(), revoked_by=by[:200], reason=reason[:500]))
        return nos

    def cards_of(self, person_id: str) -> list[dict[str, Any]]:
        with self.store.read_conn() as conn:
            recs = conn.execute(sa.select(HC).where(HC.c.person_id == person_id).order_by(HC.c.issued_at)).all()
        return [{"cardNumber": r.card_no, "status": r.status, "issued": to_instant(r.issued_at),
                 **({"revoked": to_instant(r.revoked_at), "reason": r.reason} if r.revoked_at else {})} for r in recs]


def render(payload: str, fmt: str, scale: int = 0) -> tuple[bytes, str]:
    """The QR code of a payload as SVG or PNG bytes (error correction M), and its media type."""
    import segno

    if not payload or len(payload) > 2000:
        raise _err(400, "The QR payload must be 1 to 2000 characters", "PHIP-4677", expression="token")
    qr = segno.make(payload, error="m", micro=False)
    buf = io.BytesIO()
    if fmt == "svg":
        qr.save(buf, kind="svg", scale=scale or 4, xmldecl=False)
        return buf.getvalue(), "image/svg+xml"
    if fmt == "png":
        qr.save(buf, kind="png", scale=scale or 5)
        return buf.getvalue(), "image/png"
    raise _err(400, f"format must be svg or png, not {fmt!r}", "PHIP-4677", expression="format")
