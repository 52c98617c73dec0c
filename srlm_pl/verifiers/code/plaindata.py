"""Plain data across the candidate/tests boundary: a tagged JSON encoding of Python's builtin values.

The tests process calls the candidate's functions over a pipe; arguments and results cross as this
encoding, so what reaches the tests is always a fresh builtin value (``None``, ``bool``, ``int``, ``float``,
``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``) built by the
decoder of the *receiving* process. An object with its own ``__eq__``, a ``str`` subclass or a lazy
generator never crosses: the encoder accepts exact builtin types only and the decoder builds nothing else.

Encoding: ``None``/``bool``/``str``/``float`` and small ``int`` are JSON scalars, ``list`` a JSON array;
everything else is an object ``{"#": tag, "v": payload}`` (``int`` beyond 4000 bits as hex, ``tuple``,
``dict`` as ``[[key, value], ...]`` so keys may be any encodable value, ``set``, ``frozenset``, ``bytes``
as hex, ``complex`` as ``[real, imag]``).
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 200
_BIG_INT_BITS = 4000


class NotPlainData(TypeError):
    """A value that is not built from exact builtin types (or nests deeper than MAX_DEPTH)."""


def _tag(tag: str, payload: Any) -> dict:
    return {"#": tag, "v": payload}


def to_json(value: Any, depth: int = 0) -> Any:
    """The JSON-able form of ``value``; raises NotPlainData for anything else."""
    if depth > MAX_DEPTH:
        raise NotPlainData(f"nested deeper than {MAX_DEPTH}")
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is float:
        return value
    if kind is int:
        return value if value.bit_length() <= _BIG_INT_BITS else _tag("int", hex(value))
    if kind is list:
        return [to_json(v, depth + 1) for v in value]
    if kind is tuple:
        return _tag("tuple", [to_json(v, depth + 1) for v in value])
    if kind is dict:
        return _tag("dict", [[to_json(k, depth + 1), to_json(v, depth + 1)] for k, v in value.items()])
    if kind is set or kind is frozenset:
        return _tag(kind.__name__, [to_json(v, depth + 1) for v in value])
    if kind is bytes:
        return _tag("bytes", value.hex())
    if kind is complex:
        return _tag("complex", [value.real, value.imag])
    raise NotPlainData(f"a {kind.__name__} is not plain data")


def _from_tagged(obj: dict) -> Any:
    tag, payload = obj.get("#"), obj.get("v")
    if tag == "int" and type(payload) is str:
        return int(payload, 16)
    if tag == "tuple" and type(payload) is list:
        return tuple(payload)
    if tag == "dict" and type(payload) is list:
        if not all(type(p) is list and len(p) == 2 for p in payload):
            raise NotPlainData("malformed dict payload")
        return {k: v for k, v in payload}
    if tag in ("set", "frozenset") and type(payload) is list:
        return set(payload) if tag == "set" else frozenset(payload)
    if tag == "bytes" and type(payload) is str:
        return bytes.fromhex(payload)
    if tag == "complex" and type(payload) is list and len(payload) == 2:
        return complex(float(payload[0]), float(payload[1]))
    raise NotPlainData(f"unknown tagged value {str(tag)[:40]!r}")


def from_json(raw: Any) -> Any:
    """Rebuild a value from :func:`to_json` output (already parsed JSON)."""
    if isinstance(raw, list):
        return [from_json(v) for v in raw]
    if isinstance(raw, dict):
        payload = raw.get("v")
        return _from_tagged({"#": raw.get("#"), "v": from_json(payload) if isinstance(payload, list) else payload})
    return raw


def dumps(value: Any) -> str:
    return json.dumps(to_json(value), ensure_ascii=True, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    return from_json(json.loads(text))
