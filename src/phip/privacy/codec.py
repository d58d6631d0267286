"""Encryption at rest of ID numbers, phone numbers and address lines, with keyed blind indexes.

A sealed value is the string ``enc:1:<kid>:<base64url(nonce ‖ AES-256-GCM ciphertext ‖ tag)>``
in place of the plaintext, inside the stored JSON (so JSONB, history and the change-feed rows
keep their shape); the associated data is ``<Type>/<id>``, so a ciphertext moved to another
record does not open.  Which fields are sealed (per resource type):

- ``identifier[].value`` (ID-card numbers, medical-record numbers, insurance numbers…)
- ``telecom[].value`` where ``system`` is phone, sms, fax or pager
- ``address[].line[]`` and ``address[].text`` (the street detail; city, district, state and
  postal code stay in clear for statistics and regional access rules)
- the same fields under ``contact[]`` (Patient's contacts)

Search still matches exact values: the index rows of sealed values hold
``bx<HMAC-SHA256(blind key, value)[:32 hex]>`` instead, and a query value for ``identifier``,
``telecom``, ``phone`` or ``address`` gains its blind form as an extra ORed value.  String search
matches from the start, so a sealed address line or text gets one blind row per prefix of its
normalised form (up to ``PREFIX_MAX`` characters) and one for ``:exact``.  What no longer works on
sealed fields: ``:contains`` and ``_content``/``_text``.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
from collections.abc import Iterable
from hashlib import sha256
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from phip.fhir.search.query import split_escaped, unescape
from phip.fhir.search.text import normalize
from phip.privacy.keystore import SymKey

PREFIX = "enc:1:"
_PREFIX_B = b'"enc:1:'
DEFAULT_TYPES = ("Patient", "Person", "RelatedPerson", "Practitioner")
PHONE_SYSTEMS = frozenset({"phone", "sms", "fax", "pager"})
TOKEN_PARAMS = frozenset({"identifier", "telecom", "phone"})
STRING_PARAMS = frozenset({"address"})
PREFIX_MAX = 40  # address prefixes indexed (blind) up to this many characters
SEALED_KEYS = ("identifier", "telecom", "address", "contact")
BLIND_RE = re.compile(r"^bx[0-9a-f]{32}$")


#: blinded values of at most this many characters are remembered, up to this many of them
BLIND_CACHE_CHARS = 10
BLIND_CACHE_SIZE = 50_000


class CodecError(Exception):
    pass


class Codec:
    """The store's :class:`phip.store.repository.ContentCodec` for encryption at rest."""

    def __init__(self, data_keys: list[SymKey], blind_key: SymKey, types: Iterable[str] = DEFAULT_TYPES) -> None:
        if not data_keys:
            raise CodecError("no data key")
        self.current = data_keys[0]
        self.aead = {k.kid: AESGCM(k.key) for k in data_keys}
        self.blind_key = blind_key.key
        self.types = frozenset(types)
        self._blinded: dict[str, str] = {}
        self._made_from = (list(data_keys), blind_key, sorted(self.types))

    def __reduce__(self) -> tuple[Any, ...]:
        # the importer's worker process gets a copy (spawned: the keys travel through its pipe)
        return (Codec, self._made_from)

    # -- values -----------------------------------------------------------------------------------
    def encrypt(self, value: str, aad: bytes) -> str:
        nonce = os.urandom(12)
        ct = self.aead[self.current.kid].encrypt(nonce, value.encode(), aad)
        return f"{PREFIX}{self.current.kid}:{base64.urlsafe_b64encode(nonce + ct).decode().rstrip('=')}"

    def decrypt(self, value: str, aad: bytes) -> str:
        try:
            kid, _, b64 = value[len(PREFIX):].partition(":")
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
            return self.aead[kid].decrypt(raw[:12], raw[12:], aad).decode()
        except KeyError:
            raise CodecError(f"a value is sealed with key {kid!r}, which is not in this node's key store") from None
        except Exception as e:
            raise CodecError(f"a sealed value does not open ({type(e).__name__})") from None

    def blind(self, value: str) -> str:
        # short values (the leading prefixes of addresses and names, shared by a whole region) repeat
        # endlessly in a bulk load: remember them (bounded, in memory only)
        short = len(value) <= BLIND_CACHE_CHARS
        hit = self._blinded.get(value) if short else None
        if hit is None:
            hit = "bx" + hmac.new(self.blind_key, value.encode(), sha256).hexdigest()[:32]
            if short:
                if len(self._blinded) >= BLIND_CACHE_SIZE:
                    self._blinded.clear()
                self._blinded[value] = hit
        return hit

    # -- documents --------------------------------------------------------------------------------
    def seal(self, rtype: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        if rtype not in self.types:
            return None
        aad = f"{rtype}/{doc.get('id')}".encode()
        out: dict[str, Any] | None = None

        def enc(v: Any) -> Any:
            return self.encrypt(v, aad) if isinstance(v, str) and v and not v.startswith(PREFIX) else v

        for key in ("identifier", "telecom", "address", "contact"):
            items = doc.get(key)
            if not isinstance(items, list):
                continue
            new = [_seal_item(key, it, enc) for it in items]
            if new != items:
                out = out if out is not None else dict(doc)
                out[key] = new
        return out

    def seal_rows(self, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Rows about to be inserted into ``resources``/``resource_versions``: seal any content of a
        sealed type still in clear (what the repository wrote is sealed already: a cheap check)."""
        ci, ti = columns.index("content"), columns.index("type")
        out = rows
        for k, row in enumerate(rows):
            v = row[ci]
            if v is None or row[ti] not in self.types:
                continue
            if isinstance(v, str):
                if PREFIX in v:
                    continue
                sealed = self.seal(row[ti], orjson.loads(v))
                if sealed is None:
                    continue
                nv: Any = orjson.dumps(sealed).decode()
            elif hasattr(v, "obj") and isinstance(v.obj, dict):  # psycopg's Jsonb wrapper
                sealed = self.seal(row[ti], v.obj)
                if sealed is not None:
                    v.obj = sealed
                continue
            else:
                continue
            if out is rows:
                out = list(rows)
            out[k] = (*row[:ci], nv, *row[ci + 1:])
        return out

    def open(self, content: bytes) -> bytes:
        if _PREFIX_B not in content:
            return content
        return orjson.dumps(self.open_doc(orjson.loads(content)))

    def open_value(self, value: Any) -> Any:
        """A ``content`` column value as the driver returns it (text on SQLite, a dict from JSONB)."""
        if isinstance(value, str):
            return self.open(value.encode()).decode() if PREFIX in value else value
        if isinstance(value, bytes):
            return self.open(value)
        if isinstance(value, dict) and value.get("resourceType") in self.types:
            return self.open_doc(value)
        return value

    def open_doc(self, doc: dict[str, Any]) -> dict[str, Any]:
        aad = f"{doc.get('resourceType')}/{doc.get('id')}".encode()

        def dec(s: str) -> str:
            return self.decrypt(s, aad) if s.startswith(PREFIX) else s

        out = dict(doc)
        for key in SEALED_KEYS:  # only where seal() puts ciphertext: no walk over the whole resource
            if key in out:
                out[key] = _walk(out[key], dec)
        return out

    def is_sealed(self, content: bytes) -> bool:
        return _PREFIX_B in content

    def secrets(self, rtype: str, doc: dict[str, Any]) -> set[str]:
        """The plaintext values :meth:`seal` would seal in ``doc``."""
        found: set[str] = set()
        if rtype not in self.types:
            return found

        def grab(v: Any) -> Any:
            if isinstance(v, str) and v:
                found.add(v)
            return v

        for key in ("identifier", "telecom", "address", "contact"):
            items = doc.get(key)
            if isinstance(items, list):
                for it in items:
                    _seal_item(key, it, grab)
        return found

    # -- index and query --------------------------------------------------------------------------
    def index(self, rtype: str, doc: dict[str, Any], ix: Any) -> None:
        secret = self.secrets(rtype, doc)
        if not secret:
            return
        toks = ix.tokens
        for i, (p, g, system, code, text) in enumerate(toks):
            if code is None:
                continue
            if code in secret:
                toks[i] = (p, g, system, self.blind(code), text)
            elif p.endswith(":of-type") and "|" in code:
                tc, _, value = code.partition("|")
                if value in secret:
                    toks[i] = (p, g, system, f"{tc}|{self.blind(value)}", text)
        if any(raw in secret for _p, _g, _n, raw in ix.strings):
            rows: list[Any] = []
            for p, g, norm, raw in ix.strings:
                if raw not in secret:
                    rows.append((p, g, norm, raw))
                    continue
                # one row per prefix (string search matches from the start), the whole value for :exact
                text = normalize(raw)[:PREFIX_MAX]
                for k in range(1, len(text) + 1):
                    b = self.blind("p:" + text[:k])
                    rows.append((p, g, b, self.blind("x:" + raw) if k == len(text) else b))
            ix.strings[:] = rows

    def query(self, req: Any) -> None:
        types = [req.resource_type] if req.resource_type else list(req.types or ())
        for crit in req.criteria:
            self._criterion(crit, types)

    def _criterion(self, crit: Any, types: list[str]) -> None:
        if crit.chain is not None:
            inner = [crit.chain_type] if crit.chain_type else []
            if crit.has_type:
                inner = [crit.has_type]
            self._criterion(crit.chain, inner)
            return
        if not any(t in self.types for t in types) or crit.modifier in ("missing", "text", "contains", "in",
                                                                           "not-in", "below", "above"):
            return
        extra: list[str] = []
        if crit.kind == "token" and crit.code in TOKEN_PARAMS:
            for v in crit.values:
                parts = split_escaped(v, "|")
                last = unescape(parts[-1])
                if not last or BLIND_RE.match(last):
                    continue
                extra.append("|".join([*parts[:-1], self.blind(last)]))
        elif crit.kind == "string" and crit.code in STRING_PARAMS:
            for v in crit.values:
                text = unescape(v)
                if text and not BLIND_RE.match(text):
                    if crit.modifier == "exact":
                        extra.append(self.blind("x:" + text))
                    else:
                        extra.append(self.blind("p:" + normalize(text)[:PREFIX_MAX]))
        for e in extra:
            if e not in crit.values:
                crit.values.append(e)


def _seal_item(key: str, item: Any, enc: Any) -> Any:
    if not isinstance(item, dict):
        return item
    if key == "identifier":
        v = item.get("value")
        return {**item, "value": enc(v)} if isinstance(v, str) and v else item
    if key == "telecom":
        v = item.get("value")
        if item.get("system") in PHONE_SYSTEMS and isinstance(v, str) and v:
            return {**item, "value": enc(v)}
        return item
    if key == "address":
        out = item
        lines = item.get("line")
        if isinstance(lines, list) and lines:
            out = {**out, "line": [enc(x) for x in lines]}
        if isinstance(item.get("text"), str) and item["text"]:
            out = {**out, "text": enc(item["text"])}
        return out
    if key == "contact":
        out = item
        for sub in ("telecom",):
            vals = item.get(sub)
            if isinstance(vals, list):
                out = {**out, sub: [_seal_item(sub, x, enc) for x in vals]}
        if isinstance(item.get("address"), dict):
            out = {**out, "address": _seal_item("address", item["address"], enc)}
        return out
    return item


def _walk(v: Any, fn: Any) -> Any:
    if isinstance(v, str):
        return fn(v)
    if isinstance(v, dict):
        return {k: _walk(x, fn) for k, x in v.items()}
    if isinstance(v, list):
        return [_walk(x, fn) for x in v]
    return v
