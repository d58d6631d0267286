"""A light check of ``Narrative.div`` XHTML.

The narrative is a string of XHTML whose root is a ``<div>`` in the XHTML
namespace (https://hl7.org/fhir/R4/narrative.html#Narrative.div and
https://hl7.org/fhir/R4/json.html#xhtml).  We check that it is well-formed XML
(with expat), that the root is ``<div xmlns="http://www.w3.org/1999/xhtml">``,
that it uses only the basic HTML elements and no event attributes (invariant
txt-1), and that it has some non-whitespace content (invariant txt-2).

Speed matters (every resource of a bulk import may carry a narrative), so after
the expat pass each rule is one precompiled regex search over the text; the
allowed element names are compiled into a trie-shaped regex so a tag costs one
short match, and the names of bad tags are collected only when there is one.
"""

from __future__ import annotations

import re
from xml.parsers import expat

XHTML_NS = "http://www.w3.org/1999/xhtml"

#: The elements txt-1 allows: HTML 4.0 chapters 7-11 and 15 (except 9.4), <a> and images.
ALLOWED_ELEMENTS = frozenset(
    [
        *("p", "br", "div", "h1", "h2", "h3", "h4", "h5", "h6", "a", "span", "b", "em", "i", "strong"),
        *("small", "big", "tt", "dfn", "q", "var", "abbr", "acronym", "cite", "blockquote", "hr"),
        *("address", "bdo", "kbd", "sub", "sup", "ul", "ol", "li", "dl", "dt", "dd", "pre", "table"),
        *("caption", "colgroup", "col", "thead", "tr", "tfoot", "tbody", "th", "td", "code", "samp"),
        *("img", "map", "area"),
    ]
)


_Trie = dict[str, "_Trie"]


def _trie(words: frozenset[str]) -> str:
    """A regex matching exactly ``words``, shaped as a trie so matching never backtracks far."""
    root: _Trie = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: _Trie) -> str:
        alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


_NAMES = _trie(ALLOWED_ELEMENTS)
_EVENT = r"[^>]*\s[oO][nN][a-zA-Z]+\s*=\s*[\"']"
#: A tag that is not an allowed element, or an allowed one with an event attribute.
_BAD_TAG = re.compile(rf"<(?![/!?]|{_NAMES}(?=[\s/>])(?!{_EVENT}))")
_TAG_NAME = re.compile(r"<([A-Za-z][\w.:-]*)")
_EVENT_ATTR = re.compile(rf"<{_EVENT}")
_ROOT_NS = re.compile(r"<div\b[^>]*?\sxmlns\s*=\s*([\"'])" + re.escape(XHTML_NS) + r"\1")
_TEXT = re.compile(r">\s*[^\s<]")


def check_div(value: object) -> list[tuple[str, str]]:
    """Problems with a narrative ``div`` value as ``(issue code, sentence)`` pairs; ``[]`` if fine."""
    if type(value) is not str:
        return [("value", "The narrative div must be a JSON string of XHTML")]
    if not value.startswith("<div") or value[4:5] not in (" ", ">", "\t", "\n", "\r", "/"):
        return [("value", "The narrative div must be XHTML starting with a <div> element")]
    try:
        expat.ParserCreate().Parse(value.encode(), True)
    except expat.ExpatError as exc:
        return [("value", f"The narrative div is not well-formed XHTML: {exc}")]
    except UnicodeEncodeError:
        return [("value", "The narrative div contains a lone surrogate, which is not a Unicode character")]
    out: list[tuple[str, str]] = []
    if _ROOT_NS.match(value) is None:
        out.append(("value", f'The narrative div must declare the XHTML namespace (xmlns="{XHTML_NS}")'))
    if _BAD_TAG.search(value) is not None:
        bad = sorted({t for t in _TAG_NAME.findall(value) if t not in ALLOWED_ELEMENTS})
        if bad:
            names = ", ".join(f"<{t}>" for t in bad)
            out.append(("invariant", f"The narrative uses elements FHIR narrative does not allow (txt-1): {names}"))
        if _EVENT_ATTR.search(value) is not None:
            out.append(("invariant", "The narrative must not use event attributes such as onclick (txt-1)"))
    if _TEXT.search(value) is None and "<img" not in value:
        out.append(("invariant", "The narrative must have some non-whitespace content (txt-2)"))
    return out
