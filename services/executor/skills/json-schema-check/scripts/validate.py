"""Validate JSON files against a JSON Schema subset with the standard library only.

Usage: python3 validate.py SCHEMA.json DOC.json [DOC.json ...]; exit 1 if any document violates it.
Checks type, enum, const, required, properties, additionalProperties (false or a schema), items,
minItems/maxItems, minimum/maximum, minLength/maxLength, pattern and local "$ref" ("#/...").
Other keywords are listed on stderr as not checked.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

KNOWN = {
    "$schema", "$id", "$ref", "$defs", "definitions", "title", "description", "default", "examples",
    "type", "enum", "const", "required", "properties", "additionalProperties", "items",
    "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength", "pattern",
}  # fmt: skip
TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("number", "integer"):
        return False
    if name == "integer":  # 1.0 is an integer since draft 6
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float)
    return isinstance(value, TYPES[name])


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        target: Any = root
        for part in filter(None, schema["$ref"].lstrip("#").split("/")):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    return schema


def check(value: Any, schema: dict[str, Any], path: str, root: dict[str, Any], errs: list[str]) -> None:
    s = resolve(schema, root)
    types = [s["type"]] if isinstance(s.get("type"), str) else s.get("type", [])
    if types and not any(is_type(value, t) for t in types):
        errs.append(f"{path}: expected {' or '.join(types)}, got {type(value).__name__}")
        return
    if "enum" in s and value not in s["enum"]:
        errs.append(f"{path}: {value!r} is not one of {s['enum']}")
    if "const" in s and value != s["const"]:
        errs.append(f"{path}: must be {s['const']!r}")
    if isinstance(value, str):
        if not s.get("minLength", 0) <= len(value) <= s.get("maxLength", len(value)):
            errs.append(f"{path}: length {len(value)} outside {s.get('minLength', 0)}..{s.get('maxLength', '')}")
        if "pattern" in s and not re.search(s["pattern"], value):
            errs.append(f"{path}: {value!r} does not match {s['pattern']!r}")
    if is_type(value, "number") and not s.get("minimum", value) <= value <= s.get("maximum", value):
        errs.append(f"{path}: {value} outside {s.get('minimum', '')}..{s.get('maximum', '')}")
    if isinstance(value, dict):
        errs.extend(f"{path}: missing required key {k!r}" for k in s.get("required", []) if k not in value)
        extra = s.get("additionalProperties", True)
        for key, sub in value.items():
            if key in s.get("properties", {}):
                check(sub, s["properties"][key], f"{path}.{key}", root, errs)
            elif extra is False:
                errs.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                check(sub, extra, f"{path}.{key}", root, errs)
    if isinstance(value, list):
        if not s.get("minItems", 0) <= len(value) <= s.get("maxItems", len(value)):
            errs.append(f"{path}: {len(value)} items outside {s.get('minItems', 0)}..{s.get('maxItems', '')}")
        if isinstance(s.get("items"), dict):
            for i, sub in enumerate(value):
                check(sub, s["items"], f"{path}[{i}]", root, errs)


def unchecked_keywords(schema: Any, found: set[str]) -> set[str]:
    """Keywords in ``schema`` and its subschemas that this script does not check."""
    if not isinstance(schema, dict):
        return found
    for key, sub in schema.items():
        if key not in KNOWN:
            found.add(key)
        elif key in ("properties", "$defs", "definitions") and isinstance(sub, dict):
            for child in sub.values():
                unchecked_keywords(child, found)
        elif key in ("items", "additionalProperties"):
            unchecked_keywords(sub, found)
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        schema = json.load(f)
    skipped = unchecked_keywords(schema, set())
    if skipped:
        print(f"not checked (unsupported keywords): {', '.join(sorted(skipped))}", file=sys.stderr)
    failed = 0
    for name in argv[1:]:
        try:
            with open(name, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            print(f"{name}: cannot read JSON: {exc}")
            failed += 1
            continue
        errs: list[str] = []
        check(doc, schema, "$", schema, errs)
        failed += bool(errs)
        print(f"{name}: {len(errs)} violation(s)" if errs else f"{name}: OK", *errs, sep="\n  ")
    print(f"{len(argv) - 1} file(s), {failed} with violations")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
