"""Text normalisation shared by the indexer and the query side of string search.

FHIR string search is case- and accent-insensitive and matches from the start
(https://hl7.org/fhir/R4/search.html#string).  Both sides fold text the same way:
NFKD (which also turns full-width ASCII, common in Chinese data entry, into
half-width), drop combining marks, lower-case, collapse white space.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    if text.isascii():
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.lower().split())
