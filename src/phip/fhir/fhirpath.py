"""A small, fast FHIRPath evaluator for the subset R4 search parameters use.

Why our own: search indexing evaluates ~30 expressions per stored resource, so
the evaluator must not parse per call and must know the FHIR type of every node
(a search extractor treats a ``CodeableConcept`` differently from an
``Identifier``).  General-purpose FHIRPath engines are either slow in Python or
type-blind over plain JSON.

How: ``compile(expr)`` parses once into an AST and turns it into nested Python
closures; evaluation only walks JSON.  Every :class:`Node` carries its JSON
value, its FHIR type name and an element *context* (type + element path, taken
from :mod:`phip.fhir.definitions`) that tells how to step into its children,
including FHIR JSON choice types (``Observation.value`` finds ``valueQuantity``,
``valueString``, … and knows their types from the key suffix).  For speed:

* internally nodes are plain ``(value, type, ctx)`` tuples; ``value.as(Quantity)``
  looks up ``valueQuantity`` only;
* member paths evaluated on the resource are memoised per evaluation
  environment (:func:`new_env`), so the many parameters that start with
  ``Patient.address`` or ``Resource.meta`` walk it once;
* :func:`compile_for_type` keeps only the ``|``-parts of a shared expression
  that apply to one resource type and reports the top-level keys the
  expression needs (``first_keys``), so an indexer can skip it outright.

Supported (everything the 1,390 R4 SearchParameter expressions and their
composite components use, plus a few cheap extras):

* paths, with the resource (or a base such as ``Resource``) as first step;
  ``%resource`` / ``%rootResource`` / ``%context``, ``$this``
* ``|`` union, ``=``, ``!=``, ``~``, ``!~``, ``<``, ``<=``, ``>``, ``>=``,
  ``in``, ``contains``, ``and``, ``or``, ``xor``, ``implies``,
  ``is`` / ``as`` operators, indexer ``[n]``, string / number / boolean
  literals and ``{}``
* functions ``where``, ``exists``, ``empty``, ``not``, ``first``, ``last``,
  ``tail``, ``single``, ``count``, ``hasValue``, ``as``, ``is``, ``ofType``,
  ``extension``, ``hasExtension``, ``resolve``

``resolve()`` does not fetch anything: it yields, for a ``Reference`` whose
target type can be told from ``reference`` (``Patient/1``, an absolute URL
ending in ``/Patient/1``) or ``type``, a node *typed* as that resource, which is
all ``where(resolve() is Patient)`` needs.  Known leniencies: ``as`` and ``is``
filter multi-item collections instead of raising, a multi-item collection is
true in a boolean context, and the primitive-extension shadow keys
(``_birthDate``) are not visited.  Anything else (arithmetic, date literals,
other functions) raises :class:`FhirPathError` at compile time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from phip.fhir.definitions import resource_types, types

__all__ = [
    "Compiled",
    "FhirPathError",
    "Node",
    "compile",
    "compile_for_type",
    "evaluate",
    "is_subtype",
    "lead_keys",
    "new_env",
    "output_types",
    "parse",
    "parse_reference",
]


class FhirPathError(ValueError):
    """An expression uses syntax or a function this evaluator does not support."""


# --------------------------------------------------------------------------- contexts


_Specs = tuple[tuple[str, str, "_Ctx | None"], ...]


class _Ctx:
    """Where a node sits in the FHIR definitions: an owner type and an element path.

    ``owner`` is a type name (``Observation``, ``HumanName``); ``path`` is ""
    for the type itself or the path of a backbone element inside it
    (``component``).  ``children`` maps an element name to the JSON keys it may
    appear under, each with its FHIR type and the context of its values; a
    context of ``None`` means "a resource, find it from ``resourceType``".
    """

    __slots__ = ("_children", "_typed", "owner", "path", "type")

    def __init__(self, owner: str, path: str, type_name: str) -> None:
        self.owner = owner
        self.path = path
        self.type = type_name
        self._children: dict[str, tuple[tuple[str, str, _Ctx | None], ...]] | None = None
        self._typed: dict[tuple[str, str | None], _Specs | None] = {}

    def children(self) -> dict[str, tuple[tuple[str, str, _Ctx | None], ...]]:
        if self._children is None:
            self._children = _build_children(self)
        return self._children

    def specs(self, name: str, of_type: str | None) -> _Specs | None:
        """The JSON keys of child ``name`` (only those of type ``of_type`` when given)."""
        key = (name, of_type)
        try:
            return self._typed[key]
        except KeyError:
            pass
        specs = self.children().get(name)
        if specs is None and self is _UNKNOWN:
            specs = ((name, "", None),)
        if specs is not None and of_type is not None:
            specs = tuple(sp for sp in specs if sp[2] is None or is_subtype(sp[1], of_type))
        self._typed[key] = specs
        return specs

    def __repr__(self) -> str:
        return f"_Ctx({self.owner!r}, {self.path!r})"


_CTX: dict[tuple[str, str], _Ctx] = {}
_UNKNOWN = _Ctx("", "", "")


def _ctx(owner: str, path: str = "", type_name: str | None = None) -> _Ctx:
    key = (owner, path)
    c = _CTX.get(key)
    if c is None:
        c = _Ctx(owner, path, type_name or owner)
        _CTX[key] = c
    return c


def type_ctx(type_name: str) -> _Ctx:
    """The context of a FHIR type's root (unknown types get an untyped context)."""
    if type_name in types():
        return _ctx(type_name)
    return _UNKNOWN


def _build_children(c: _Ctx) -> dict[str, tuple[tuple[str, str, _Ctx | None], ...]]:
    tdefs = types()
    td = tdefs.get(c.owner)
    if td is None:
        return {}
    out: dict[str, tuple[tuple[str, str, _Ctx | None], ...]] = {}
    prefix = c.path + "." if c.path else ""
    for name, el in td.children(c.path).items():
        if el.is_choice:
            base = name[:-3]
            out[base] = tuple((base + t[0].upper() + t[1:], t, _value_ctx(t)) for t in el.types)
            continue
        if el.ref is not None:
            target = td.elements.get(el.ref)
            tname = target.types[0] if target is not None and target.types else "BackboneElement"
            out[name] = ((name, tname, _ctx(c.owner, el.ref, tname)),)
            continue
        if not el.types:
            continue
        tname = el.types[0]
        sub = prefix + name + "."
        if tname in ("BackboneElement", "Element") and any(p.startswith(sub) for p in td.elements):
            out[name] = ((name, tname, _ctx(c.owner, prefix + name, tname)),)
        else:
            out[name] = ((name, tname, _value_ctx(tname)),)
    return out


def _value_ctx(type_name: str) -> _Ctx | None:
    if type_name == "Resource":
        return None
    return type_ctx(type_name)


def _dynamic(value: Any) -> tuple[str, _Ctx]:
    """Type and context of a value whose declared type is ``Resource`` or unknown."""
    if type(value) is dict:
        rt = value.get("resourceType")
        if type(rt) is str and rt in types():
            return rt, _ctx(rt)
        return "Element", _UNKNOWN
    if type(value) is str:
        return "string", _UNKNOWN
    if type(value) is bool:
        return "boolean", _UNKNOWN
    if type(value) is int:
        return "integer", _UNKNOWN
    if type(value) is float:
        return "decimal", _UNKNOWN
    return "Element", _UNKNOWN


# --------------------------------------------------------------------------- types

_SYSTEM_TYPES = {
    "String": "string",
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
    "Quantity": "Quantity",
}
_SUBTYPE_CACHE: dict[tuple[str, str], bool] = {}


def _norm_type_name(name: str) -> str:
    if name.startswith("FHIR."):
        name = name[5:]
    elif name.startswith("System."):
        name = name[7:]
        return _SYSTEM_TYPES.get(name, name)
    if name in types():
        return name
    return _SYSTEM_TYPES.get(name, name)


def is_subtype(type_name: str, of: str) -> bool:
    """True when FHIR type ``type_name`` is ``of`` or derives from it (``Age`` is a ``Quantity``)."""
    key = (type_name, of)
    r = _SUBTYPE_CACHE.get(key)
    if r is None:
        r = False
        tdefs = types()
        t: str | None = type_name
        seen = 0
        while t is not None and seen < 16:
            if t == of:
                r = True
                break
            td = tdefs.get(t)
            t = td.base if td is not None else None
            seen += 1
        _SUBTYPE_CACHE[key] = r
    return r


# --------------------------------------------------------------------------- nodes


class Node(NamedTuple):
    """One item of a FHIRPath collection: a JSON value, its FHIR type name
    (``CodeableConcept``, ``dateTime``, ``Reference``, ``Patient``…) and its
    element context (how to step into its children).

    Evaluation works on plain ``(value, type, ctx)`` tuples, which are cheaper to
    make; :meth:`Compiled.evaluate` hands back ``Node``s.  Both index alike.
    """

    value: Any
    type: str
    ctx: _Ctx

    @classmethod
    def root(cls, resource: dict[str, Any]) -> Node:
        """The node of a whole resource (its type read from ``resourceType``)."""
        t, c = _dynamic(resource)
        return cls(resource, t, c)

    def __repr__(self) -> str:
        return f"Node({self.type}: {self.value!r})"


Item = tuple[Any, str, _Ctx]  # (value, FHIR type, context): a Node without the class
Coll = list[Item]
#: Evaluation environment: (the root resource item = %resource, memo of root paths)
Env = tuple[Item, dict[int, Coll]]
Fn = Callable[[Coll, Env], Coll]  # (focus collection, environment) -> collection

_BOOL_CTX = _ctx("boolean")
_INT_CTX = _ctx("integer")
_STR_CTX = _ctx("string")


def _bool(v: bool) -> Coll:
    return [(v, "boolean", _BOOL_CTX)]


def new_env(root: Item) -> Env:
    """A fresh environment for evaluating expressions on the resource ``root``."""
    return (root, {})


# --------------------------------------------------------------------------- references

_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")


_MISS = object()
_REF_CACHE: dict[str, Any] = {}


def parse_reference(ref: str) -> tuple[str | None, str | None, str | None] | None:
    """Split a reference string into ``(type, id, url)``; ``None`` for a ``#contained`` one.

    ``Patient/1`` and ``Patient/1/_history/2`` give ``("Patient", "1", None)``;
    an absolute URL gives the URL plus the type and id of its last two segments
    when they look like ``Type/id``; ``urn:uuid:``/``urn:oid:`` and anything else
    give the string as ``url`` only.  Results are cached (references repeat).
    """
    r = _REF_CACHE.get(ref, _MISS)
    if r is _MISS:
        r = _parse_reference(ref)
        if len(_REF_CACHE) >= 65536:
            _REF_CACHE.clear()
        _REF_CACHE[ref] = r
    return r


def _parse_reference(ref: str) -> tuple[str | None, str | None, str | None] | None:
    if not ref or ref[0] == "#":
        return None
    if ref.startswith("urn:"):
        return (None, None, ref)
    absolute = "://" in ref
    segs = ref.split("/")
    if len(segs) >= 4 and segs[-2] == "_history":
        segs = segs[:-2]
    if len(segs) >= 2:
        t, i = segs[-2], segs[-1]
        if t in resource_types() and _ID_RE.match(i):
            if absolute:
                return (t, i, ref)
            if len(segs) == 2:
                return (t, i, None)
    return (None, None, ref)


def _reference_type(item: Item) -> str | None:
    """The resource type a Reference (or canonical/uri, or inline resource) points to."""
    v = item[0]
    if type(v) is dict:
        if "resourceType" in v:
            return str(v["resourceType"])
        r = v.get("reference")
        if type(r) is str:
            p = parse_reference(r)
            if p is not None and p[0] is not None:
                return p[0]
        t = v.get("type")
        if type(t) is str:
            # ``type`` is a uri: a bare type name or a StructureDefinition url
            t = t.rsplit("/", 1)[-1]
            if t in resource_types():
                return t
        return None
    if type(v) is str:
        p = parse_reference(v.split("|", 1)[0])
        if p is not None:
            return p[0]
    return None


# --------------------------------------------------------------------------- tokenizer

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<date>@[0-9T][0-9\-:T.Z+]*)
  | (?P<ext>%(?:[A-Za-z_][A-Za-z0-9_]*|'(?:[^'\\]|\\.)*'|`[^`]*`))
  | (?P<var>\$[A-Za-z_]+)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
  | (?P<op>!=|!~|<=|>=|[.,()\[\]{}|=~<>+\-*/&])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(s: str) -> str:
    out = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            if nxt == "u" and i + 6 <= len(s):
                out.append(chr(int(s[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokenize(expr: str) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    pos = 0
    n = len(expr)
    while pos < n:
        m = _TOKEN_RE.match(expr, pos)
        if m is None:
            raise FhirPathError(f"unexpected character {expr[pos]!r} at {pos} in {expr!r}")
        kind = m.lastgroup
        text = m.group()
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "date":
            raise FhirPathError(f"date/time literals are not supported: {text!r} in {expr!r}")
        if kind == "id" and text.startswith("`"):
            toks.append(("id", text[1:-1]))
            continue
        toks.append((kind or "", text))
    toks.append(("eof", ""))
    return toks


# --------------------------------------------------------------------------- parser
# AST: tuples whose first item is the node kind:
#   ("member", name)              child element (or, at the head, a type filter)
#   ("func", name, args)          function call on the focus
#   ("invoke", left, right)       right (member/func) applied to left's result
#   ("index", left, n)            left[n]
#   ("lit", value, type)          literal
#   ("empty",)                    {}
#   ("ext", name)                 %name
#   ("this",)                     $this
#   ("binop", op, left, right)
#   ("typeop", op, left, type)    is / as

_BINARY_PREC = {
    "implies": 1,
    "or": 2,
    "xor": 2,
    "and": 3,
    "in": 4,
    "contains": 4,
    "=": 5,
    "~": 5,
    "!=": 5,
    "!~": 5,
    "<": 6,
    ">": 6,
    "<=": 6,
    ">=": 6,
    "|": 7,
    "is": 8,
    "as": 8,
    "+": 9,
    "-": 9,
    "&": 9,
    "*": 10,
    "/": 10,
    "div": 10,
    "mod": 10,
}
_WORD_OPS = {"implies", "or", "xor", "and", "in", "contains", "is", "as", "div", "mod"}


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = _tokenize(expr)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, text: str) -> None:
        k, t = self.take()
        if t != text or k not in ("op", "id"):
            raise FhirPathError(f"expected {text!r}, found {t or 'end'!r} in {self.expr!r}")

    def error(self, msg: str) -> FhirPathError:
        return FhirPathError(f"{msg} in {self.expr!r}")

    def parse(self) -> tuple[Any, ...]:
        ast = self.expression(0)
        if self.peek()[0] != "eof":
            raise self.error(f"unexpected {self.peek()[1]!r}")
        return ast

    def binary_op(self) -> str | None:
        k, t = self.peek()
        if k == "op" and t in _BINARY_PREC:
            return t
        if k == "id" and t in _WORD_OPS:
            return t
        return None

    def expression(self, min_prec: int) -> tuple[Any, ...]:
        left = self.unary()
        while True:
            op = self.binary_op()
            if op is None:
                return left
            prec = _BINARY_PREC[op]
            if prec < min_prec:
                return left
            self.take()
            if op in ("is", "as"):
                left = ("typeop", op, left, self.type_specifier())
                continue
            right = self.expression(prec + 1)
            left = ("binop", op, left, right)

    def type_specifier(self) -> str:
        k, t = self.take()
        if k != "id":
            raise self.error(f"expected a type name, found {t!r}")
        name = t
        while self.peek() == ("op", "."):
            self.take()
            k, t = self.take()
            if k != "id":
                raise self.error("bad qualified type name")
            name += "." + t
        return name

    def unary(self) -> tuple[Any, ...]:
        k, t = self.peek()
        if k == "op" and t in ("+", "-"):
            self.take()
            inner = self.unary()
            if t == "-" and inner[0] == "lit" and isinstance(inner[1], (int, float)):
                return ("lit", -inner[1], inner[2])
            if t == "+":
                return inner
            raise self.error("unary minus is only supported on number literals")
        return self.postfix(self.term())

    def postfix(self, node: tuple[Any, ...]) -> tuple[Any, ...]:
        while True:
            k, t = self.peek()
            if k == "op" and t == ".":
                self.take()
                node = ("invoke", node, self.invocation())
            elif k == "op" and t == "[":
                self.take()
                idx = self.expression(0)
                self.expect("]")
                if idx[0] != "lit" or type(idx[1]) is not int:
                    raise self.error("only integer literal indexes are supported")
                node = ("index", node, idx[1])
            else:
                return node

    def invocation(self) -> tuple[Any, ...]:
        k, t = self.take()
        if k != "id":
            raise self.error(f"expected a name after '.', found {t!r}")
        if self.peek() == ("op", "("):
            return self.call(t)
        return ("member", t)

    def call(self, name: str) -> tuple[Any, ...]:
        self.expect("(")
        args: list[tuple[Any, ...]] = []
        if self.peek() != ("op", ")"):
            while True:
                args.append(self.expression(0))
                if self.peek() == ("op", ","):
                    self.take()
                    continue
                break
        self.expect(")")
        return ("func", name, tuple(args))

    def term(self) -> tuple[Any, ...]:
        k, t = self.take()
        if k == "str":
            return ("lit", _unescape(t[1:-1]), "string")
        if k == "num":
            if "." in t:
                return ("lit", float(t), "decimal")
            return ("lit", int(t), "integer")
        if k == "ext":
            name = t[1:]
            if name[:1] in ("'", "`"):
                name = _unescape(name[1:-1])
            return ("ext", name)
        if k == "var":
            if t == "$this":
                return ("this",)
            raise self.error(f"variable {t} is not supported")
        if k == "op" and t == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if k == "op" and t == "{":
            self.expect("}")
            return ("empty",)
        if k == "id":
            if t in ("true", "false") and self.peek() != ("op", "("):
                return ("lit", t == "true", "boolean")
            if self.peek() == ("op", "("):
                return self.call(t)
            return ("member", t)
        raise self.error(f"unexpected {t or 'end'!r}")


def parse(expr: str) -> tuple[Any, ...]:
    """Parse an expression into the tuple AST documented above (raises :class:`FhirPathError`)."""
    return _Parser(expr).parse()


# --------------------------------------------------------------------------- evaluation helpers


def _children(focus: Coll, name: str, of_type: str | None = None) -> Coll:
    """Child ``name`` of every item (choice elements resolved from the JSON key
    suffix; with ``of_type``, only the keys of that type are looked at, which makes
    ``value.as(Quantity)`` one dict lookup instead of one per ``value[x]`` type)."""
    out: Coll = []
    append = out.append
    last: _Ctx | None = None
    specs: _Specs | None = None
    skey = (name, of_type)
    for n in focus:
        v = n[0]
        if type(v) is not dict:
            continue
        c = n[2]
        if c is not last:
            last = c
            specs = c._typed.get(skey, _MISS)  # type: ignore[arg-type]
            if specs is _MISS:
                specs = c.specs(name, of_type)
        if specs is None:
            continue
        for key, tname, kc in specs:
            x = v.get(key)
            if x is None:
                continue
            if type(x) is list:
                for item in x:
                    if item is None:
                        continue
                    if kc is None:
                        t2, c2 = _dynamic(item)
                        if of_type is None or is_subtype(t2, of_type):
                            append((item, t2, c2))
                    else:
                        append((item, tname, kc))
            elif kc is None:
                t2, c2 = _dynamic(x)
                if of_type is None or is_subtype(t2, of_type):
                    append((x, t2, c2))
            else:
                append((x, tname, kc))
    return out


def _to_bool(coll: Coll) -> bool | None:
    """FHIRPath singleton evaluation of a collection in a boolean context
    (lenient: a collection of several items counts as true)."""
    if not coll:
        return None
    if len(coll) == 1:
        v = coll[0][0]
        if type(v) is bool:
            return v
    return True


def _prim_equal(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in (int, float) and tb in (int, float):
        return bool(a == b)
    if ta is not tb:
        return False
    return bool(a == b)


def _equal(left: Coll, right: Coll) -> bool | None:
    if not left or not right:
        return None
    if len(left) != len(right):
        return False
    return all(_prim_equal(a[0], b[0]) for a, b in zip(left, right, strict=True))


def _equiv_value(v: Any) -> Any:
    if type(v) is str:
        return " ".join(v.lower().split())
    return v


def _equivalent(left: Coll, right: Coll) -> bool:
    if not left and not right:
        return True
    if len(left) != len(right):
        return False
    a = sorted(repr(_equiv_value(n[0])) for n in left)
    b = sorted(repr(_equiv_value(n[0])) for n in right)
    return a == b


def _union(a: Coll, b: Coll) -> Coll:
    """``a | b`` without duplicates (objects by identity, primitives by type and value)."""
    if not a:
        return b if len(b) < 2 else _union(b, [])
    out: Coll = []
    seen: set[Any] = set()
    for n in (*a, *b):
        v = n[0]
        key: Any = id(v) if type(v) in (dict, list) else (n[1], v)
        if key in seen:
            continue
        seen.add(key)
        out.append(n)
    return out


def _type_arg(args: tuple[Any, ...], fname: str) -> str:
    if len(args) != 1:
        raise FhirPathError(f"{fname}() takes one type name")
    a = args[0]
    parts: list[str] = []
    while a[0] == "invoke":
        if a[2][0] != "member":
            raise FhirPathError(f"{fname}() takes a type name")
        parts.append(a[2][1])
        a = a[1]
    if a[0] != "member":
        raise FhirPathError(f"{fname}() takes a type name")
    parts.append(a[1])
    return _norm_type_name(".".join(reversed(parts)))


def _string_arg(args: tuple[Any, ...], fname: str) -> str:
    if len(args) != 1 or args[0][0] != "lit" or type(args[0][1]) is not str:
        raise FhirPathError(f"{fname}() takes one string literal")
    return str(args[0][1])


def _no_args(args: tuple[Any, ...], fname: str) -> None:
    if args:
        raise FhirPathError(f"{fname}() takes no arguments")


def _extensions(n: Item, url: str) -> list[dict[str, Any]]:
    v = n[0]
    if type(v) is not dict:
        return []
    exts = v.get("extension")
    if type(exts) is not list:
        return []
    return [e for e in exts if type(e) is dict and e.get("url") == url]


def _member_equals(n: Item, name: str, value: Any) -> bool:
    kids = _children([n], name)
    return len(kids) == 1 and _prim_equal(kids[0][0], value)


def _resolves_to(n: Item, tname: str) -> bool:
    t = _reference_type(n)
    return t is not None and is_subtype(t, tname)


# --------------------------------------------------------------------------- compiler

_PREFIX_IDS: dict[tuple[tuple[str, str | None], ...], int] = {}


def _prefix_id(steps: tuple[tuple[str, str | None], ...]) -> int:
    i = _PREFIX_IDS.get(steps)
    if i is None:
        i = len(_PREFIX_IDS) + 1
        _PREFIX_IDS[steps] = i
    return i


def _as_chain(ast: tuple[Any, ...], head: bool) -> tuple[tuple[str, str | None], ...] | None:
    """The ``(element, type filter)`` steps of a pure member path from the input
    (``$this.address.city``, ``value.as(Quantity)``), else ``None``."""
    k = ast[0]
    if k == "this":
        return ()
    if k == "member":
        return None if head and _is_type_head(ast) else ((ast[1], None),)
    target = _as_target(ast)
    if target is not None:
        c = _as_chain(target[0], head)
        if c and c[-1][1] is None:
            return (*c[:-1], (c[-1][0], target[1]))
        return None
    if k == "invoke" and ast[2][0] == "member":
        c = _as_chain(ast[1], head)
        return None if c is None else (*c, (ast[2][1], None))
    return None


def _compile_chain(steps: tuple[tuple[str, str | None], ...]) -> Fn:
    """A member path; evaluated on the root resource, each prefix is memoised in the
    environment so parameters sharing it (``Patient.address``, ``.address.city``,
    ``.address.state``…) walk the JSON once per resource."""
    ids = tuple(_prefix_id(steps[: k + 1]) for k in range(len(steps)))
    last_id = ids[-1]
    if len(steps) == 1:
        name, of_type = steps[0]

        def step1(focus: Coll, env: Env) -> Coll:
            if len(focus) == 1 and focus[0] is env[0]:
                memo = env[1]
                r = memo.get(last_id)
                if r is None:
                    r = memo[last_id] = _children(focus, name, of_type)
                return r
            return _children(focus, name, of_type)

        return step1

    pairs = tuple(zip(steps, ids, strict=True))

    def chain(focus: Coll, env: Env) -> Coll:
        if len(focus) == 1 and focus[0] is env[0]:
            memo = env[1]
            r = memo.get(last_id)
            if r is not None:
                return r
            cur = focus
            for (name, of_type), pid in pairs:
                r = memo.get(pid)
                if r is None:
                    r = memo[pid] = _children(cur, name, of_type) if cur else []
                cur = r
            return cur
        cur = focus
        for name, of_type in steps:
            if not cur:
                return cur
            cur = _children(cur, name, of_type)
        return cur

    return chain


def _compile(ast: tuple[Any, ...], head: bool) -> Fn:
    """Turn an AST into a closure ``(focus, env) -> collection``.

    ``head`` is True when ``ast`` is evaluated directly on the expression's
    input (not after a ``.``): there an upper-case name is a type filter
    (``Patient.name``), elsewhere a name is always a child element.
    """
    steps = _as_chain(ast, head)
    if steps:
        return _compile_chain(steps)

    kind = ast[0]
    if kind == "member":  # a type filter at the head
        tname = _norm_type_name(ast[1])
        return lambda focus, env: [n for n in focus if is_subtype(n[1], tname)]

    if kind == "this":
        return lambda focus, env: focus

    if kind == "invoke":
        if ast[1][0] == "this":
            return _compile(ast[2], False)
        left = _compile(ast[1], head)
        right = _compile(ast[2], False)
        rk = ast[2]
        if rk[0] == "member" or (rk[0] == "func" and rk[1] in _EMPTY_PRESERVING):

            def invoke(focus: Coll, env: Env) -> Coll:
                r = left(focus, env)
                return right(r, env) if r else r

            return invoke
        return lambda focus, env: right(left(focus, env), env)

    if kind == "index":
        inner = _compile(ast[1], head)
        idx: int = ast[2]

        def index(focus: Coll, env: Env) -> Coll:
            r = inner(focus, env)
            return [r[idx]] if 0 <= idx < len(r) else []

        return index

    if kind == "lit":
        item: Item = (ast[1], ast[2], type_ctx(ast[2]))
        return lambda focus, env: [item]

    if kind == "empty":
        return lambda focus, env: []

    if kind == "ext":
        ename: str = ast[1]
        if ename in ("resource", "rootResource", "context"):
            return lambda focus, env: [env[0]]
        consts = {
            "ucum": "http://unitsofmeasure.org",
            "sct": "http://snomed.info/sct",
            "loinc": "http://loinc.org",
        }
        if ename in consts:
            citem: Item = (consts[ename], "string", _STR_CTX)
            return lambda focus, env: [citem]
        raise FhirPathError(f"unknown external constant %{ename}")

    if kind == "typeop":
        op, tname2 = ast[1], _norm_type_name(ast[3])
        operand = _compile(ast[2], head)
        if op == "as":
            return lambda focus, env: [n for n in operand(focus, env) if is_subtype(n[1], tname2)]

        def is_op(focus: Coll, env: Env) -> Coll:
            r = operand(focus, env)
            return _bool(is_subtype(r[0][1], tname2)) if r else []

        return is_op

    if kind == "binop":
        return _compile_binop(ast[1], _compile(ast[2], head), _compile(ast[3], head))

    if kind == "func":
        return _compile_func(ast[1], ast[2])

    raise FhirPathError(f"cannot compile {kind}")


def _as_target(ast: tuple[Any, ...]) -> tuple[tuple[Any, ...], str] | None:
    """``(X, T)`` when ``ast`` is ``X as T``, ``X.as(T)`` or ``X.ofType(T)``."""
    if ast[0] == "typeop" and ast[1] == "as":
        return ast[2], _norm_type_name(ast[3])
    if ast[0] == "invoke" and ast[2][0] == "func" and ast[2][1] in ("as", "ofType"):
        return ast[1], _type_arg(ast[2][2], ast[2][1])
    return None


def _compile_binop(op: str, left: Fn, right: Fn) -> Fn:
    if op == "|":
        return lambda focus, env: _union(left(focus, env), right(focus, env))
    if op == "=":

        def eq(focus: Coll, env: Env) -> Coll:
            r = _equal(left(focus, env), right(focus, env))
            return [] if r is None else _bool(r)

        return eq
    if op == "!=":

        def ne(focus: Coll, env: Env) -> Coll:
            r = _equal(left(focus, env), right(focus, env))
            return [] if r is None else _bool(not r)

        return ne
    if op == "~":
        return lambda focus, env: _bool(_equivalent(left(focus, env), right(focus, env)))
    if op == "!~":
        return lambda focus, env: _bool(not _equivalent(left(focus, env), right(focus, env)))
    if op in ("<", ">", "<=", ">="):

        def compare(focus: Coll, env: Env) -> Coll:
            a, b = left(focus, env), right(focus, env)
            if len(a) != 1 or len(b) != 1:
                return []
            x, y = a[0][0], b[0][0]
            num = (int, float)
            if not ((type(x) in num and type(y) in num) or (type(x) is str and type(y) is str)):
                return []
            if op == "<":
                return _bool(x < y)
            if op == ">":
                return _bool(x > y)
            if op == "<=":
                return _bool(x <= y)
            return _bool(x >= y)

        return compare
    if op in ("in", "contains"):

        def member_of(focus: Coll, env: Env) -> Coll:
            a, b = left(focus, env), right(focus, env)
            if op == "contains":
                a, b = b, a
            if not a:
                return []
            x = a[0][0]
            return _bool(any(_prim_equal(x, n[0]) for n in b))

        return member_of
    if op in ("and", "or", "xor", "implies"):

        def logic(focus: Coll, env: Env) -> Coll:
            a = _to_bool(left(focus, env))
            if op == "and" and a is False:
                return _bool(False)
            if op == "or" and a is True:
                return _bool(True)
            if op == "implies" and a is False:
                return _bool(True)
            b = _to_bool(right(focus, env))
            r: bool | None
            if op == "and":
                r = False if b is False else (True if a and b else None)
            elif op == "or":
                r = True if b is True else (False if a is False and b is False else None)
            elif op == "xor":
                r = None if a is None or b is None else a != b
            else:  # implies
                r = True if b is True else (None if a is None or b is None else (not a) or b)
            return [] if r is None else _bool(r)

        return logic
    raise FhirPathError(f"operator {op!r} is not supported")


# functions that yield nothing on an empty input (so a path may stop early)
_EMPTY_PRESERVING = frozenset(
    {"where", "first", "last", "tail", "single", "as", "ofType", "extension", "resolve", "not"}
)


def _compile_where(crit_ast: tuple[Any, ...]) -> Fn:
    """``where(criteria)``, with allocation-free fast paths for the criteria
    search parameters use: ``name = 'literal'``, ``resolve() is Type`` and
    ``hasExtension('url')``."""
    c = crit_ast
    if c[0] == "binop" and c[1] == "=" and c[2][0] == "member" and not _is_type_head(c[2]) and c[3][0] == "lit":
        name, value = c[2][1], c[3][1]
        return lambda focus, env: [n for n in focus if _member_equals(n, name, value)]
    if c[0] == "typeop" and c[1] == "is" and c[2] == ("func", "resolve", ()):
        tname = _norm_type_name(c[3])
        return lambda focus, env: [n for n in focus if _resolves_to(n, tname)]
    if c[0] == "func" and c[1] == "hasExtension":
        url = _string_arg(c[2], "hasExtension")
        return lambda focus, env: [n for n in focus if _extensions(n, url)]
    crit = _compile(crit_ast, True)
    return lambda focus, env: [n for n in focus if _to_bool(crit([n], env))]


def _compile_func(name: str, args: tuple[Any, ...]) -> Fn:
    if name == "where":
        if len(args) != 1:
            raise FhirPathError("where() takes one criteria expression")
        return _compile_where(args[0])
    if name == "exists":
        if not args:
            return lambda focus, env: _bool(bool(focus))
        if len(args) != 1:
            raise FhirPathError("exists() takes at most one criteria expression")
        ecrit = _compile(args[0], True)
        return lambda focus, env: _bool(any(_to_bool(ecrit([n], env)) for n in focus))
    if name == "empty":
        _no_args(args, name)
        return lambda focus, env: _bool(not focus)
    if name == "not":
        _no_args(args, name)

        def not_(focus: Coll, env: Env) -> Coll:
            b = _to_bool(focus)
            return [] if b is None else _bool(not b)

        return not_
    if name == "first":
        _no_args(args, name)
        return lambda focus, env: focus[:1]
    if name == "last":
        _no_args(args, name)
        return lambda focus, env: focus[-1:]
    if name == "tail":
        _no_args(args, name)
        return lambda focus, env: focus[1:]
    if name == "single":
        _no_args(args, name)
        return lambda focus, env: focus if len(focus) == 1 else []
    if name == "count":
        _no_args(args, name)
        return lambda focus, env: [(len(focus), "integer", _INT_CTX)]
    if name == "hasValue":
        _no_args(args, name)
        return lambda focus, env: _bool(len(focus) == 1 and type(focus[0][0]) not in (dict, list))
    if name in ("as", "ofType"):
        tname = _type_arg(args, name)
        return lambda focus, env: [n for n in focus if is_subtype(n[1], tname)]
    if name == "is":
        tname2 = _type_arg(args, name)
        return lambda focus, env: _bool(is_subtype(focus[0][1], tname2)) if focus else []
    if name == "extension":
        url = _string_arg(args, name)
        ext_ctx = type_ctx("Extension")
        return lambda focus, env: [(e, "Extension", ext_ctx) for n in focus for e in _extensions(n, url)]
    if name == "hasExtension":
        hurl = _string_arg(args, name)
        return lambda focus, env: _bool(any(_extensions(n, hurl) for n in focus))
    if name == "resolve":
        _no_args(args, name)

        def resolve(focus: Coll, env: Env) -> Coll:
            out: Coll = []
            for n in focus:
                t = _reference_type(n)
                if t is not None:
                    out.append((n[0], t, _ctx(t)))
            return out

        return resolve
    raise FhirPathError(f"function {name}() is not supported")


# --------------------------------------------------------------------------- public API


class Compiled:
    """A compiled expression: call :meth:`evaluate` as often as needed, no parsing per call.

    ``fn(focus, env)`` is the raw closure for hot loops (see :func:`new_env`):
    it takes and returns lists of ``(value, type, ctx)`` tuples.
    """

    __slots__ = ("first_keys", "fn", "source")

    def __init__(self, source: str, fn: Fn, first_keys: frozenset[str] | None = None) -> None:
        self.source = source
        self.fn = fn
        #: For :func:`compile_for_type` results: the top-level JSON keys of the
        #: resource at least one of which must be present for the expression to
        #: yield anything (``None`` when that cannot be told statically).
        self.first_keys = first_keys

    def evaluate(self, resource: dict[str, Any]) -> list[Node]:
        """Evaluate on a resource (a parsed FHIR JSON object with ``resourceType``)."""
        root = Node.root(resource)
        return [Node(*n) for n in self.fn([root], (root, {}))]

    def evaluate_node(self, node: Node | Item, root: Node | Item | None = None) -> list[Node]:
        """Evaluate with ``node`` as the input (``$this``); ``root`` is ``%resource``."""
        return [Node(*n) for n in self.fn([node], (root if root is not None else node, {}))]

    def __repr__(self) -> str:
        return f"Compiled({self.source!r})"


def compile(expr: str) -> Compiled:
    """Parse and compile ``expr``; raises :class:`FhirPathError` on unsupported syntax."""
    return Compiled(expr, _compile(parse(expr), True))


_CACHE: dict[str, Compiled] = {}


def evaluate(resource: dict[str, Any], expr: str) -> list[Node]:
    """Evaluate ``expr`` on ``resource``, compiling it once (compiled forms are cached)."""
    c = _CACHE.get(expr)
    if c is None:
        c = compile(expr)
        _CACHE[expr] = c
    return c.evaluate(resource)


def _union_parts(ast: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if ast[0] == "binop" and ast[1] == "|":
        return _union_parts(ast[2]) + _union_parts(ast[3])
    return [ast]


def _head(ast: tuple[Any, ...]) -> tuple[Any, ...]:
    """The left-most term of an expression (the one evaluated on the input)."""
    while True:
        k = ast[0]
        if k in ("invoke", "index"):
            ast = ast[1]
        elif k in ("typeop", "binop"):
            ast = ast[2]
        else:
            return ast


def _is_type_head(ast: tuple[Any, ...]) -> bool:
    return ast[0] == "member" and ast[1][:1].isupper()


def _lead(ast: tuple[Any, ...]) -> tuple[str, str | None] | None:
    """``(element, type or None)`` of the first step an expression takes from its
    input (after an optional type head such as ``Observation.``), when it yields
    nothing unless that element is present; ``("extension", None)`` for
    ``extension(url)``.  ``None`` when that cannot be told (a bare head,
    ``exists()``, ``and``, ``%resource`` …)."""
    target = _as_target(ast)
    if target is not None:
        inner, tname = target
        lead = _lead(inner)
        first = inner[0] == "member" or (inner[0] == "invoke" and _is_type_head(inner[1]))
        if lead is not None and first and lead[1] is None:
            return (lead[0], tname)
        return lead
    k = ast[0]
    if k == "member":
        return None if _is_type_head(ast) else (ast[1], None)
    if k == "invoke":
        left, right = ast[1], ast[2]
        if right[0] == "func" and right[1] not in _EMPTY_PRESERVING:
            return None
        if _is_type_head(left) or left[0] == "this":
            if right[0] == "member":
                return (right[1], None)
            if right[0] == "func" and right[1] == "extension":
                return ("extension", None)
            return None
        return _lead(left)
    if k == "func" and ast[1] == "extension":
        return ("extension", None)
    if k == "index":
        return _lead(ast[1])
    return None


def lead_keys(expr: str, resource_type: str) -> frozenset[str] | None:
    """Top-level JSON keys of a ``resource_type`` resource at least one of which
    must be present for ``expr`` (evaluated on the resource) to yield anything;
    ``None`` when that cannot be told statically."""
    return _keys_of(parse(expr), _ctx(resource_type) if resource_type in types() else _UNKNOWN)


def _keys_of(ast: tuple[Any, ...], rctx: _Ctx) -> frozenset[str] | None:
    keys: set[str] = set()
    for part in _union_parts(ast):
        lead = _lead(part)
        if lead is None:
            return None
        if lead[0] == "extension" and lead[1] is None and "extension" not in rctx.children():
            return None
        for key, _t, _c in rctx.specs(lead[0], lead[1]) or ():
            keys.add(key)
    return frozenset(keys)


def _strip_head(ast: tuple[Any, ...]) -> tuple[Any, ...]:
    """Replace the leading type filter (``Observation``) by ``$this`` once it is known to match."""
    k = ast[0]
    if _is_type_head(ast):
        return ("this",)
    if k in ("invoke", "index"):
        return (k, _strip_head(ast[1]), *ast[2:])
    if k == "typeop":
        return (k, ast[1], _strip_head(ast[2]), ast[3])
    if k == "binop":
        return (k, ast[1], _strip_head(ast[2]), _strip_head(ast[3]))
    return ast


def _applies(head: tuple[Any, ...], resource_type: str) -> bool:
    """False when a union part starts with a type name that ``resource_type`` is not."""
    if head[0] == "member" and head[1][:1].isupper():
        return is_subtype(resource_type, _norm_type_name(head[1]))
    return True


def parts_for_type(expr: str, resource_type: str) -> tuple[tuple[Any, ...], ...]:
    """The top-level ``|``-parts of ``expr`` that apply to ``resource_type``, as syntax trees with
    their type head replaced by ``$this`` (the parts :func:`compile_for_type` compiles)."""
    return tuple(_strip_head(p) for p in _union_parts(parse(expr)) if _applies(_head(p), resource_type))


def resolve_filter(ast: tuple[Any, ...]) -> tuple[tuple[Any, ...], str] | None:
    """``(X, T)`` when ``ast`` is ``X.where(resolve() is T)``, else ``None``."""
    if ast[0] == "invoke" and ast[2][0] == "func" and ast[2][1] == "where" and len(ast[2][2]) == 1:
        c = ast[2][2][0]
        if c[0] == "typeop" and c[1] == "is" and c[2] == ("func", "resolve", ()):
            return ast[1], _norm_type_name(c[3])
    return None


def compile_for_type(expr: str, resource_type: str, bare_keys: frozenset[str] | None = None) -> Compiled | None:
    """Compile only the ``|``-parts of ``expr`` that apply to ``resource_type``.

    Search parameter expressions shared by many types
    (``AllergyIntolerance.patient | CarePlan.subject.where(...) | …``) are split
    at the top-level unions; parts whose head names another type are dropped,
    and the head of the kept ones (known to match) is not re-checked at run time.
    Returns ``None`` when no part applies.  The result's ``first_keys`` lets a
    caller skip evaluation when the resource lacks every key it starts from;
    ``bare_keys`` are the keys to assume for a part that is the bare resource
    (composites such as ``Observation | Observation.component``), else such a
    part makes ``first_keys`` ``None``.
    """
    rctx = _ctx(resource_type) if resource_type in types() else _UNKNOWN
    kept: list[tuple[Any, ...]] = []
    keys: set[str] | None = set()
    for part in _union_parts(parse(expr)):
        if not _applies(_head(part), resource_type):
            continue
        stripped = _strip_head(part)
        kept.append(stripped)
        if keys is None:
            continue
        if stripped == ("this",) and bare_keys is not None:
            keys |= bare_keys
            continue
        pk = _keys_of(part, rctx)
        if pk is None:
            keys = None
        else:
            keys |= pk
    if not kept:
        return None
    ast = kept[0]
    for p in kept[1:]:
        ast = ("binop", "|", ast, p)
    return Compiled(expr, _compile(ast, True), frozenset(keys) if keys is not None else None)


# --------------------------------------------------------------------------- static typing

_Abs = frozenset[tuple[str, "_Ctx | None"]]


def _abstract(ast: tuple[Any, ...], focus: _Abs, root: _Abs, head: bool) -> _Abs:
    """Abstract evaluation over (type, context) pairs instead of JSON values."""
    k = ast[0]
    if k == "member":
        name = ast[1]
        if head and name[:1].isupper():
            tname = _norm_type_name(name)
            return frozenset(x for x in focus if is_subtype(x[0], tname))
        out: set[tuple[str, _Ctx | None]] = set()
        for _t, c in focus:
            if c is None or c is _UNKNOWN:
                continue
            for _key, tn, cc in c.children().get(name, ()):
                out.add((tn, cc) if cc is not None else ("Resource", None))
        return frozenset(out)
    if k == "invoke":
        return _abstract(ast[2], _abstract(ast[1], focus, root, head), root, False)
    if k == "index":
        return _abstract(ast[1], focus, root, head)
    if k == "typeop":
        inner = _abstract(ast[2], focus, root, head)
        if ast[1] == "as":
            tname = _norm_type_name(ast[3])
            return frozenset(x for x in inner if is_subtype(x[0], tname))
        return frozenset({("boolean", _BOOL_CTX)})
    if k == "binop":
        if ast[1] == "|":
            return _abstract(ast[2], focus, root, head) | _abstract(ast[3], focus, root, head)
        return frozenset({("boolean", _BOOL_CTX)})
    if k == "func":
        name, args = ast[1], ast[2]
        if name in ("where", "first", "last", "tail", "single"):
            return focus
        if name in ("as", "ofType"):
            tname = _type_arg(args, name)
            return frozenset(x for x in focus if is_subtype(x[0], tname))
        if name == "extension":
            return frozenset({("Extension", type_ctx("Extension"))})
        if name == "resolve":
            return frozenset({("Resource", None)})
        if name == "count":
            return frozenset({("integer", _INT_CTX)})
        return frozenset({("boolean", _BOOL_CTX)})
    if k == "ext":
        return root
    if k == "lit":
        return frozenset({(ast[2], type_ctx(ast[2]))})
    if k == "this":
        return focus
    return frozenset()


def output_types(expr: str, resource_type: str, context: str | None = None) -> frozenset[str]:
    """The FHIR types ``expr`` can yield on a ``resource_type`` (from the definitions, no data).

    With ``context`` (an expression on the resource, e.g. a composite's), ``expr``
    is typed relative to each item ``context`` yields, as composite components are.
    Nodes whose declared type is ``Resource`` are reported as ``"Resource"``.
    """
    root: _Abs = frozenset({(resource_type, _ctx(resource_type) if resource_type in types() else _UNKNOWN)})
    focus = root
    if context is not None:
        focus = frozenset()
        for part in _union_parts(parse(context)):
            h = _head(part)
            if not _applies(h, resource_type):
                continue
            focus = focus | _abstract(part, root, root, True)
    return frozenset(t for t, _c in _abstract(parse(expr), focus, root, True))
