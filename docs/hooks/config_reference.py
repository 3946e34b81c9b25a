"""mkdocs hook: the configuration reference, generated from the config schema at build time.

docs/configuration.md holds a marker line; this hook replaces it with one table per top-level
section of src/clipscale/schemas/config.schema.yaml (every key, its type, default, whether it is
execution-only, and the schema's description), so the page cannot drift from the schema that
validates every config: `mkdocs build --strict` is the one check.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

MARKER = "<!-- config-reference -->"
SCHEMA = Path(__file__).resolve().parents[2] / "src" / "clipscale" / "schemas" / "config.schema.yaml"


def _type(s: dict) -> str:
    if "const" in s:
        return f"`{json.dumps(s['const'], ensure_ascii=False)}`"
    if "enum" in s:
        return "one of " + ", ".join(f"`{json.dumps(v, ensure_ascii=False)}`" for v in s["enum"])
    t = s.get("type")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array" and isinstance(s.get("items"), dict):
        inner = _type(s["items"])
        return f"list of {inner}" if inner else "list"
    if t:
        return t
    for key in ("anyOf", "oneOf"):
        if key in s:
            return " or ".join(filter(None, (_type(x) for x in s[key])))
    return ""


def _cell(text) -> str:
    """One line of a table cell: the schema's text as it is (no HTML, no table separators)."""
    text = " ".join(str(text).split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("*", "\\*")


def rows(schema: dict, prefix: str = ""):
    """(key, schema) of every documented key under `schema`, depth first, in the schema's order."""
    for name, s in (schema.get("properties") or {}).items():
        key = f"{prefix}{name}"
        yield key, s
        yield from _children(s, key)


def _children(s: dict, key: str):
    if s.get("properties"):
        yield from rows(s, key + ".")
    extra = s.get("additionalProperties")
    if isinstance(extra, dict) and (extra.get("properties") or extra.get("description")):
        yield f"{key}.<name>", extra
        yield from rows(extra, f"{key}.<name>.")
    items = s.get("items")
    if isinstance(items, dict) and items.get("properties"):
        yield from rows(items, f"{key}[].")


def reference(schema: dict) -> str:
    out = []
    for section, s in (schema.get("properties") or {}).items():
        required = " (required)" if section in schema.get("required", []) else ""
        out.append(f"## `{section}`{required}\n")
        if s.get("description"):
            out.append(_cell(s["description"]) + "\n")
        table = [(section, s), *_children(s, section)]
        out.append("| key | type | default | description |")
        out.append("|---|---|---|---|")
        for key, k in table:
            default = "`" + json.dumps(k["default"], ensure_ascii=False).replace("|", "\\|") + "`" if "default" in k else ""
            note = "*execution only: reruns nothing.* " if k.get("x-execution") else ""
            text = "" if k is s else _cell(k.get("description", ""))  # the section's is above
            out.append(f"| `{key}` | {_cell(_type(k))} | {default} | {note}{text} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    schema = yaml.safe_load(SCHEMA.read_text())
    return markdown.replace(MARKER, reference(schema))
