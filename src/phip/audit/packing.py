"""AuditEvents stored compressed: zstd with a dictionary of two typical events.

An AuditEvent is ~2 KB of JSON, nearly all of it the same from one event to the next (the BALP
codings, systems and displays); stored as it is, a row takes a whole 4 KB page of ``audit_events``
and every audited request writes that page to the log and again at the checkpoint.  Compressed
against :data:`DICTIONARY_1` it is ~200 bytes (eight or more rows a page).

A packed value is one byte naming its dictionary (``1``), then a zstd frame.  **A dictionary never
changes once released**: rows written with it must unpack for as long as the trail is kept.  Events of
a new shape get a new dictionary under a new number, beside this one.  The dictionary holds synthetic
placeholder values only.
"""

from __future__ import annotations

import threading

import zstandard

#: dictionary 1: a search and a read, in the shape of :func:`phip.audit.events.to_fhir` (2026-12)
DICTIONARY_1 = (
    b'{"action":"E","agent":[{"purposeOfUse":[{"coding":[{"code":"TREAT","system":"http://terminology.hl7.'
    b'org/CodeSystem/v3-ActReason"}]}],"requestor":true,"role":[{"coding":[{"code":"doctor","system":"urn:'
    b'phip:role"}]}],"type":{"coding":[{"code":"humanuser","display":"human user","system":"http://termino'
    b'logy.hl7.org/CodeSystem/extra-security-role-type"}]},"who":{"identifier":{"system":"urn:phip:subject'
    b'","value":"doctor"}}},{"requestor":false,"type":{"coding":[{"code":"PROV","display":"healthcare prov'
    b'ider","system":"http://terminology.hl7.org/CodeSystem/v3-RoleClass"}]},"who":{"reference":"Organizat'
    b'ion/0190f000-0000-7000-8000-000000000000"}},{"network":{"address":"10.0.0.1","type":"2"},"requestor"'
    b':false,"type":{"coding":[{"code":"110153","display":"Source Role ID","system":"http://dicom.nema.org'
    b'/resources/ontology/DCM"}]},"who":{"display":"doctor"}},{"requestor":false,"type":{"coding":[{"code"'
    b':"110152","display":"Destination Role ID","system":"http://dicom.nema.org/resources/ontology/DCM"}]}'
    b',"who":{"display":"phip node"}}],"entity":[{"role":{"code":"1","display":"Patient","system":"http://'
    b'terminology.hl7.org/CodeSystem/object-role"},"type":{"code":"1","display":"Person","system":"http://'
    b'terminology.hl7.org/CodeSystem/audit-entity-type"},"what":{"reference":"Patient/0190f000-0000-7000-8'
    b'000-000000000000"}},{"query":"T2JzZXJ2YXRpb24/c3ViamVjdD1QYXRpZW50LzAxOTBmMDAwLTAwMDAtNzAwMC04MDAwLT'
    b'AwMDAwMDAwMDAwMCZjb2RlPWh0dHA6Ly9sb2luYy5vcmd8ODg2Ny00","role":{"code":"24","display":"Query","syste'
    b'm":"http://terminology.hl7.org/CodeSystem/object-role"},"type":{"code":"2","display":"System Object"'
    b',"system":"http://terminology.hl7.org/CodeSystem/audit-entity-type"}}],"id":"100","meta":{"profile":'
    b'["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"]},"outcome":"0"'
    b',"recorded":"2026-01-01T00:00:00.000000Z","resourceType":"AuditEvent","source":{"observer":{"display'
    b'":"phip node"},"type":[{"code":"4","display":"Application Server","system":"http://terminology.hl7.o'
    b'rg/CodeSystem/security-source-type"}]},"subtype":[{"code":"search-type","system":"http://hl7.org/fhi'
    b'r/restful-interaction"}],"type":{"code":"rest","display":"RESTful Operation","system":"http://termin'
    b'ology.hl7.org/CodeSystem/audit-event-type"}}\n{"action":"R","agent":[{"altId":"Person/0190f000-0000-7'
    b'000-8000-000000000000","purposeOfUse":[{"coding":[{"code":"TREAT","system":"http://terminology.hl7.o'
    b'rg/CodeSystem/v3-ActReason"}]}],"requestor":true,"role":[{"coding":[{"code":"doctor","system":"urn:p'
    b'hip:role"}]}],"type":{"coding":[{"code":"humanuser","display":"human user","system":"http://terminol'
    b'ogy.hl7.org/CodeSystem/extra-security-role-type"}]},"who":{"identifier":{"system":"urn:phip:subject"'
    b',"value":"doctor"}}},{"requestor":false,"type":{"coding":[{"code":"PROV","display":"healthcare provi'
    b'der","system":"http://terminology.hl7.org/CodeSystem/v3-RoleClass"}]},"who":{"reference":"Organizati'
    b'on/0190f000-0000-7000-8000-000000000000"}},{"network":{"address":"10.0.0.1","type":"2"},"requestor":'
    b'false,"type":{"coding":[{"code":"110153","display":"Source Role ID","system":"http://dicom.nema.org/'
    b'resources/ontology/DCM"}]},"who":{"display":"doctor"}},{"requestor":false,"type":{"coding":[{"code":'
    b'"110152","display":"Destination Role ID","system":"http://dicom.nema.org/resources/ontology/DCM"}]},'
    b'"who":{"display":"phip node"}}],"entity":[{"role":{"code":"1","display":"Patient","system":"http://t'
    b'erminology.hl7.org/CodeSystem/object-role"},"type":{"code":"1","display":"Person","system":"http://t'
    b'erminology.hl7.org/CodeSystem/audit-entity-type"},"what":{"reference":"Patient/0190f000-0000-7000-80'
    b'00-000000000000"}},{"role":{"code":"4","display":"Domain Resource","system":"http://terminology.hl7.'
    b'org/CodeSystem/object-role"},"type":{"code":"2","display":"System Object","system":"http://terminolo'
    b'gy.hl7.org/CodeSystem/audit-entity-type"},"what":{"reference":"Observation/0190f000-0000-7000-8000-0'
    b'00000000000"}}],"id":"101","meta":{"profile":["https://profiles.ihe.net/ITI/BALP/StructureDefinition'
    b'/IHE.BasicAudit.PatientRead"]},"outcome":"0","recorded":"2026-01-01T00:00:00.000000Z","resourceType"'
    b':"AuditEvent","source":{"observer":{"display":"phip node"},"type":[{"code":"4","display":"Applicatio'
    b'n Server","system":"http://terminology.hl7.org/CodeSystem/security-source-type"}]},"subtype":[{"code'
    b'":"read","system":"http://hl7.org/fhir/restful-interaction"}],"type":{"code":"rest","display":"RESTf'
    b'ul Operation","system":"http://terminology.hl7.org/CodeSystem/audit-event-type"}}'
)
LEVEL = 3

_DICT = zstandard.ZstdCompressionDict(DICTIONARY_1, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
_DICT.precompute_compress(level=LEVEL)
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c: zstandard.ZstdCompressor | None = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(dict_data=_DICT, write_checksum=False, write_dict_id=False,
                                               write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor(dict_data=_DICT)
    return d


def pack(content: bytes) -> bytes:
    """An event's JSON as stored (``audit_events.zcontent``)."""
    return b"\x01" + _compressor().compress(content)


def unpack(packed: bytes) -> bytes:
    """The JSON of a stored event; ValueError if the value is not one :func:`pack` made."""
    data = bytes(packed)
    if data[:1] != b"\x01":
        raise ValueError(f"unknown audit packing {data[:1]!r}")
    try:
        return _decompressor().decompress(data[1:])
    except zstandard.ZstdError as e:
        raise ValueError(f"damaged audit record: {e}") from None
