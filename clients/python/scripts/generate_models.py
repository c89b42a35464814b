"""Write agentry/models.py from the server's OpenAPI document: one TypedDict per schema component.

    DJANGO_SETTINGS_MODULE=config.settings.typecheck .venv/bin/python manage.py spectacular \
        --format openapi-json --file /tmp/agentry-schema.json
    .venv/bin/python clients/python/scripts/generate_models.py /tmp/agentry-schema.json \
        > clients/python/agentry/models.py

TypedDicts describe the JSON the API sends and takes without wrapping it: the client returns the decoded body as is,
so a field the server adds later reaches callers without a client release. The output is deterministic and already
in `ruff format` style; tests/client/test_models_current.py fails when it differs from what the schema gives.
"""

from __future__ import annotations

import json
import keyword
import sys
import textwrap
from typing import Any

LINE = 120
SCALARS = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}
HEADER = '''"""Typed models of the Agentry API, generated from /api/v1/schema/ by scripts/generate_models.py.

Every response and request body is a TypedDict: plain JSON dicts, checked by type checkers, unchanged at run time.
Do not edit: regenerate (the script's docstring says how).
"""

from typing import Any, Literal, NotRequired, TypedDict
'''


def _ref(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _is_enum(schema: dict[str, Any]) -> bool:
    return "enum" in schema and "properties" not in schema


def _type(schema: dict[str, Any], components: dict[str, Any]) -> str:
    """The Python annotation of one schema (a property's, an item's)."""
    if "$ref" in schema:
        name = _ref(schema["$ref"])
        annotation = "None" if components[name].get("enum") == [None] else name
    elif "allOf" in schema and len(schema["allOf"]) == 1:
        annotation = _type(schema["allOf"][0], components)
    elif "oneOf" in schema or "anyOf" in schema:
        members = [_type(member, components) for member in schema.get("oneOf") or schema["anyOf"]]
        annotation = " | ".join(dict.fromkeys(members))
    elif "enum" in schema:
        annotation = _literal(schema["enum"])
    else:
        kind = schema.get("type")
        if kind == "array":
            annotation = f"list[{_type(schema.get('items') or {}, components)}]"
        elif kind == "object" or "additionalProperties" in schema:
            values = schema.get("additionalProperties")
            value = _type(values, components) if isinstance(values, dict) and values else "Any"
            annotation = f"dict[str, {value}]"
        else:
            annotation = SCALARS.get(kind or "", "Any")
    if schema.get("nullable") and not annotation.endswith("| None") and annotation != "None":
        annotation += " | None"
    return annotation


def _literal(values: list[Any]) -> str:
    members = [json.dumps(v) for v in values if v is not None]
    literal = f"Literal[{', '.join(members)}]" if members else "None"
    return f"{literal} | None" if members and None in values else literal


def _docstring(text: str, indent: str) -> list[str]:
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]
    width = LINE - len(indent) - 3  # the opening quotes share the first line
    lines: list[str] = []
    for paragraph in paragraphs:
        if lines:
            lines.append("")
        lines += textwrap.wrap(paragraph.replace('"""', "'''"), width=width, break_on_hyphens=False)
    if len(lines) == 1 and len(indent) + len(lines[0]) + 6 <= LINE:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *[f"{indent}{line}" if line else "" for line in lines[1:]], f'{indent}"""']


def _enum(name: str, schema: dict[str, Any]) -> list[str]:
    literal = _literal(schema["enum"])
    if len(name) + len(literal) + 3 <= LINE:
        return [f"{name} = {literal}"]
    members = [json.dumps(v) for v in schema["enum"] if v is not None]
    if None in schema["enum"]:
        return [f"{name} = (", "    Literal[", *[f"        {m}," for m in members], "    ]", "    | None", ")"]
    return [f"{name} = Literal[", *[f"    {m}," for m in members], "]"]


def _field(schema: dict[str, Any], required: bool, components: dict[str, Any]) -> str:
    annotation = _type(schema, components)
    return annotation if required else f"NotRequired[{annotation}]"


def _typed_dict(name: str, schema: dict[str, Any], components: dict[str, Any]) -> list[str]:
    properties: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    fields = {key: _field(prop, key in required, components) for key, prop in properties.items()}
    if any(keyword.iskeyword(key) or not key.isidentifier() for key in fields):
        # Keys such as "from" cannot be class attributes: the functional form takes any string.
        return [
            f"{name} = TypedDict(",
            f'    "{name}",',
            "    {",
            *[f'        "{key}": {value},' for key, value in fields.items()],
            "    },",
            ")",
        ]
    lines = [f"class {name}(TypedDict):"]
    if schema.get("description"):
        lines += _docstring(schema["description"], "    ")
        if fields:
            lines.append("")
    lines += [f"    {key}: {value}" for key, value in fields.items()]
    if len(lines) == 1:
        lines.append("    pass")
    return lines


def _dependencies(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        found = {_ref(schema["$ref"])} if "$ref" in schema else set()
        for value in schema.values():
            found |= _dependencies(value)
        return found
    if isinstance(schema, list):
        return set().union(*(_dependencies(item) for item in schema)) if schema else set()
    return set()


def render(document: dict[str, Any]) -> str:
    """The module's source for one OpenAPI document (deterministic: components in dependency, then name, order)."""
    components: dict[str, Any] = document["components"]["schemas"]
    enums = sorted(name for name, schema in components.items() if _is_enum(schema) and schema["enum"] != [None])
    # Annotations are evaluated (no future import: `__required_keys__` is then right at run time too), so each
    # component comes after the components it names.
    ordered: list[str] = []

    def place(name: str, trail: tuple[str, ...] = ()) -> None:
        if name in ordered or name in trail or _is_enum(components[name]):
            return
        for dependency in sorted(_dependencies(components[name])):
            place(dependency, (*trail, name))
        ordered.append(name)

    for name in sorted(components):
        place(name)
    aliases = "\n\n".join("\n".join(_enum(name, components[name])) for name in enums)
    classes = "\n\n\n".join("\n".join(_typed_dict(name, components[name], components)) for name in ordered)
    return f"{HEADER}\n{aliases}\n\n\n{classes}\n"


def main(argv: list[str]) -> None:
    path = argv[1] if len(argv) > 1 else "-"
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    sys.stdout.write(render(json.loads(text)))


if __name__ == "__main__":
    main(sys.argv)
