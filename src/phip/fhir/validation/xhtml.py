"""A light check of ``Narrative.div`` XHTML.

The narrative is a string of XHTML whose root is a ``<div>`` in the XHTML
namespace (https://hl7.org/fhir/R4/narrative.html#Narrative.div and
https://hl7.org/fhir/R4/json.html#xhtml).  We check that it is well-formed XML
(with expat, a few microseconds for a typical narrative), that the root is
``<div xmlns="http://www.w3.org/1999/xhtml">``, that it uses only the basic HTML
elements and no event attributes (invariant txt-1), and that it has some
non-whitespace content (invariant txt-2).
"""

from __future__ import annotations

import re
from xml.parsers import expat

XHTML_NS = "http://www.w3.org/1999/xhtml"

#: The elements txt-1 allows: HTML 4.0 chapters 7-11 and 15 (except 9.4), <a> and images.
ALLOWED_ELEMENTS = frozenset(
    "p br div h1 h2 h3 h4 h5 h6 a span b em i strong small big tt dfn q var abbr acronym cite "
    "blockquote hr address bdo kbd sub sup ul ol li dl dt dd pre table caption colgroup col "
    "thead tr tfoot tbody th td code samp img map area".split()
)

_ROOT_NS = re.compile(r"<div\b[^>]*?\sxmlns\s*=\s*([\"'])" + re.escape(XHTML_NS) + r"\1")
_TAG_NAME = re.compile(r"<([A-Za-z][\w.:-]*)")
_EVENT_ATTR = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
_MARKUP = re.compile(r"<[^>]*>")


def check_div(value: object) -> list[tuple[str, str]]:
    """Problems with a narrative ``div`` value as ``(issue code, sentence)`` pairs; ``[]`` if fine."""
    if type(value) is not str:
        return [("value", "The narrative div must be a JSON string of XHTML")]
    if not value.startswith("<div") or value[4:5] not in (" ", ">", "\t", "\n", "\r", "/"):
        return [("value", "The narrative div must be XHTML starting with a <div> element")]
    try:
        expat.ParserCreate().Parse(value, True)
    except expat.ExpatError as exc:
        return [("value", f"The narrative div is not well-formed XHTML: {exc}")]
    out: list[tuple[str, str]] = []
    if _ROOT_NS.match(value) is None:
        out.append(("value", f'The narrative div must declare the XHTML namespace (xmlns="{XHTML_NS}")'))
    bad = sorted({t for t in _TAG_NAME.findall(value) if t.lower() not in ALLOWED_ELEMENTS})
    if bad:
        names = ", ".join(f"<{t}>" for t in bad)
        out.append(("invariant", f"The narrative uses elements not allowed in FHIR narrative (txt-1): {names}"))
    if _EVENT_ATTR.search(value) is not None:
        out.append(("invariant", "The narrative must not use event attributes such as onclick (txt-1)"))
    if "<img" not in value and not _MARKUP.sub("", value).strip():
        out.append(("invariant", "The narrative must have some non-whitespace content (txt-2)"))
    return out
