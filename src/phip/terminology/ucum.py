"""A syntax check for UCUM unit expressions (https://ucum.org/ucum, §2 "Syntax rules").

UCUM is a grammar, not a list: ``mg/dL``, ``10*9/L`` and ``mL/min/{1.73_m2}`` are all codes.  The
shipped CodeSystem lists the common units with Chinese displays; any other code is accepted when it
parses with this grammar over the atoms below.

Limits (documented in docs/terminology.md): the atom table covers the SI units and the customary
and clinical units seen in health data, not all ~300 UCUM atoms; units are not converted or
checked for commensurability; annotations ``{…}`` are accepted as written.
"""

from __future__ import annotations

import re
from functools import cache

PREFIXES = ("da", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "d", "c", "m", "u", "n", "p", "f", "a", "z", "y",
            "Ki", "Mi", "Gi", "Ti")

def _words(text: str) -> list[str]:
    return text.split()


#: atoms that take prefixes (UCUM "metric" units)
METRIC = frozenset(_words("""
m s g rad K C cd sr Hz N Pa J W A V F Ohm S Wb Cel T H lm lx Bq Gy Sv L l ar t bar u eV pc mol kat eq osm U
[iU] [IU] cal B Np st Ao b atm gf kgf Ci R RAD REM G Mx Oe Gb P St dyn erg Lmb [g] [c] [h] [k] [e] m[Hg] m[H2O]
B[SPL] B[V] B[mV] B[uV] B[10.nV] B[W] B[kW] [S] Bi Gal g% mho sph [car_Au] [pH] [HPF] [LPF]
"""))

#: atoms that do not take prefixes
NON_METRIC = frozenset(_words("""
10* 10^ [pi] % [ppth] [ppm] [ppb] [pptr] mo a wk d h min deg ' '' gon circ [in_i] [ft_i] [yd_i] [mi_i] [nmi_i]
[lb_av] [oz_av] [gr] [ton_av] [gal_us] [qt_us] [pt_us] [foz_us] [cup_us] [tbs_us] [tsp_us] [gal_br] [pt_br]
[psi] [degF] [degR] [drp] [diop] [mesh_i] [Ch] [HP] [cal_IT] [cal_th] [Btu] [hp] [knot_i] [in_i'Hg] [in_i'H2O]
[smgy'U] [PFU] [FFU] [CFU] [BAU] [AU] [arb'U] [USP'U] [GPL'U] [MPL'U] [APL'U] [beth'U] [todd'U] [dye'U]
[ka'U] [knk'U] [mclg'U] [tb'U] [Amb'a'1'U] [D'ag'U] [EID_50] [TCID_50] [CCID_50] [IR] [Lf] [hnsf'U] [MET]
[crd_us] [bf_i] [cr_i] [m/s2] [lne] [wood'U] [mu_0] [eps_0] [sft_i] [sin_i] [syd_i] [cin_i] [cft_i] [cyd_i]
[ly] mm[Hg] cm[H2O] [degRe] [S] [ppb] [kn_i] [kp_C] [kp_V] [ka_U] [anti'Xa'U] [stone_av] [lcwt_av]
"""))

_ATOM_RE = re.compile(r"(\[[^\]]*\]|[^.\/(){}\[\]0-9+\-]+)")


class _Parser:
    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def main(self) -> bool:
        if self.peek() == "/":
            self.i += 1
        if not self.term():
            return False
        return self.i == len(self.s)

    def term(self) -> bool:
        if not self.component():
            return False
        while self.peek() in (".", "/") and self.peek():
            self.i += 1
            if not self.component():
                return False
        return True

    def component(self) -> bool:
        c = self.peek()
        if c == "(":
            self.i += 1
            if not self.term() or self.peek() != ")":
                return False
            self.i += 1
            return True
        if c == "{":
            return self.annotation()
        m = re.match(r"\d+", self.s[self.i:])
        if m and not self.s[self.i:].startswith(("10*", "10^")):
            self.i += m.end()
            if self.peek() == "{":
                return self.annotation()
            return True
        if not self.simple_unit():
            return False
        m = re.match(r"[+-]?\d+", self.s[self.i:])
        if m:
            self.i += m.end()
        if self.peek() == "{":
            return self.annotation()
        return True

    def annotation(self) -> bool:
        j = self.s.find("}", self.i)
        if j < 0 or "{" in self.s[self.i + 1:j]:
            return False
        body = self.s[self.i + 1:j]
        if any(ord(ch) < 33 or ord(ch) > 126 for ch in body):
            return False
        self.i = j + 1
        return True

    def simple_unit(self) -> bool:
        rest = self.s[self.i:]
        for special in ("10*", "10^"):
            if rest.startswith(special):
                self.i += 3
                return True
        # longest symbol made of atom characters: letters, brackets, apostrophes, % and '_'
        m = re.match(r"(?:\[[^\]]*\]|[A-Za-z%'_])+(?:\[[^\]]*\])?", rest)
        if not m:
            return False
        sym = m.group(0)
        # a symbol may end in digits of an exponent; those are not part of it (handled by the caller)
        if _atom_ok(sym):
            self.i += len(sym)
            return True
        return False


@cache
def _atom_ok(sym: str) -> bool:
    if sym in METRIC or sym in NON_METRIC:
        return True
    return any(sym.startswith(p) and sym[len(p):] in METRIC for p in PREFIXES)


@cache
def is_valid(expr: str) -> bool:
    """Whether ``expr`` is a syntactically valid UCUM expression over the known atoms."""
    if not expr or len(expr) > 200 or any(ch.isspace() for ch in expr):
        return False
    try:
        return _Parser(expr).main()
    except RecursionError:  # pragma: no cover - absurd nesting
        return False
