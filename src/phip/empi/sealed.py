"""The master index's own tables under encryption at rest (the privacy capability's codec).

``empi_record.features`` holds a resident's ID numbers, record numbers, phones and address in the
form the matcher compares; ``empi_key`` holds blocking keys made of them.  With a codec on the
store (encryption at rest, the default), features are stored sealed (AES-GCM, bound to the
record's patient id) and the blocking keys built from those fields are stored as keyed blind
values: equal keys stay equal, so candidates are still found by index look-ups.  Keys made of
names and birth dates stay readable, as they are in the Patient resources themselves (the
``/fhir/empi/pinyin`` search ranges over them).  Without a codec everything is stored as before,
and rows written before encryption was turned on still read.
"""

from __future__ import annotations

from typing import Any

import orjson

from phip.empi.normalize import Features

#: blocking keys made of sealed fields: resident ID, documents, record numbers, phones, address
SEALED_KEY_PREFIXES = ("r:", "d:", "m:", "p:", "a:")
CONTEXT = "empi_record"


class SealedFeaturesError(RuntimeError):
    pass


def stored_keys(codec: Any, keys: list[str]) -> list[str]:
    """Blocking keys as ``empi_key`` stores (and is searched for) them."""
    if codec is None:
        return keys
    return [codec.blind(k) if k.startswith(SEALED_KEY_PREFIXES) else k for k in keys]


def seal_features(codec: Any, f: Features) -> str:
    text = orjson.dumps(f.to_json()).decode()
    return text if codec is None else str(codec.encrypt(text, f"{CONTEXT}/{f.pid}".encode()))


def open_features(codec: Any, pid: str, stored: str) -> Features:
    if not stored.startswith("{"):
        if codec is None:
            raise SealedFeaturesError("the master index's records are sealed but the node has no data key "
                                      "(encryption at rest is off)")
        stored = codec.decrypt(stored, f"{CONTEXT}/{pid}".encode())
    return Features.from_json(orjson.loads(stored))


def sealed_column(rules: Any) -> Any:
    """``empi_record.features`` for key rotation; records sealed for the first time get their
    blocking keys blinded too (else new records, whose keys are blinded, would not find them)."""
    from phip.empi import tables as T
    from phip.empi.rules import blocking_keys
    from phip.store.repository import SealedColumn, executemany

    def rekey(conn: Any, codec: Any, rows: list[tuple[str, str]]) -> None:
        K = T.key
        pids = [pid for pid, _text in rows]
        conn.execute(K.delete().where(K.c.patient_id.in_(pids)))
        keys = [(k, pid) for pid, text in rows
                for k in stored_keys(codec, blocking_keys(open_features(None, pid, text), rules.blocking))]
        executemany(conn, K, ("key", "patient_id"), keys)

    return SealedColumn(T.record, "patient_id", "features", CONTEXT, rekey)
