"""The grammar of the model's replies: JSON schemas for a think (one tool call, with an optional
reflection on the last result first), a reflection and a replan. llama.cpp turns each into a grammar,
so every reply parses; `think_schema` narrows the tools a turn may call and excludes exact calls the
agent may not repeat (where a pattern can express them).
"""

from __future__ import annotations

import json
import re
from typing import Any

from elpis_worker.tools import TOOL_SCHEMAS

# The argument that makes a call "the same call" for the grammar's repeat exclusion; tools without one
# (run_tests, finish) are excluded whole while their last call stands.
REPEAT_KEY = {
    "list_dir": "path",
    "read_file": "path",
    "edit_file": "search",
    "write_file": "content",
    "search": "pattern",
    "run": "command",
    "python": "code",
}
# A string the grammar can exclude: no quote, backslash, bracket, caret or control character (those need
# escapes that the schema-to-grammar conversion does not carry through reliably).
_PLAIN = re.compile(r'^[^"\\\[\]^\x00-\x1f]{1,200}$')
_ANY = '[^"\\\\\\x00-\\x1f]'


def not_one_of(values: list[str]) -> str:
    """A regular expression (anchored, in the subset llama.cpp's schema converter supports) matching every
    plain JSON string except `values`: a trie of the values where each branch may leave the trie."""
    trie: dict[str, Any] = {}
    for value in values:
        node = trie
        for c in value:
            node = node.setdefault(c, {})
        node[""] = {}

    def rest(node: dict[str, Any]) -> str:
        children = sorted(c for c in node if c)
        # "-" last, where it is a literal in a character class.
        leave = "".join(c for c in children if c != "-") + ("-" if "-" in children else "")
        alts = [f'[^"\\\\\\x00-\\x1f{leave}]{_ANY}*' if children else f"{_ANY}+"]
        alts += [f"[{c}]({rest(node[c])})" if not c.isalnum() else f"{c}({rest(node[c])})" for c in children]
        body = "|".join(alts)
        return body if "" in node else f"({body})?"

    return f"^({rest(trie)})$"


# The longest thought the grammar allows. A cap the model runs into cuts its sentence off and forces the
# string closed, and what follows is garbled (seen with Qwen 1.5B at 240: a mangled edit_file search on
# every turn); the prompt asks for one or two sentences, well inside it.
THOUGHT_CHARS = 480

# The reflection that leads a one-call turn: did the last result move the task on? The reply's thought,
# after it, is the turn's assessment and the reason for its action. A separate "assessment" string before
# the thought (until 2026-11-30) cost a third of a turn's decoding: the 1.5B model filled it to its
# 240-character cap in 10 of 14 replies, mostly restating the prompt, and then began the thought with
# the same words; a cut assessment sometimes garbled the call after it.
REFLECTION_PROPERTIES: dict[str, Any] = {"progress": {"type": "boolean"}}


def think_schema(
    tools: list[str] | None = None,
    banned: list[dict[str, Any]] | None = None,
    reflect: bool = False,
) -> dict[str, Any]:
    """One alternative per allowed tool, so the tool name and its arguments always match. Restricting
    the tools is how a strategy switch is enforced: the grammar cannot produce an excluded tool. `banned`
    calls (recent calls that failed or changed nothing) are excluded by a pattern on their key argument."""
    allowed = tools or list(TOOL_SCHEMAS)

    def expressible(call: dict[str, Any]) -> bool:
        value = (call.get("args") or {}).get(REPEAT_KEY.get(call["tool"], ""))
        return isinstance(value, str) and bool(_PLAIN.match(value))

    # A call no pattern can express is refused after the fact once; made again anyway, its whole tool
    # sits out the next turn.
    whole = {
        call["tool"]
        for call in banned or []
        if call["tool"] not in REPEAT_KEY or (not expressible(call) and call.get("repeats", 1) >= 2)
    }
    if set(allowed) - whole:  # never exclude every tool: then the refusal after the call does it
        allowed = [name for name in allowed if name not in whole]
    excluded_values: dict[str, list[str]] = {}
    for call in banned or []:
        key = REPEAT_KEY.get(call["tool"])
        value = (call.get("args") or {}).get(key) if key else None
        if isinstance(value, str) and _PLAIN.match(value):
            excluded_values.setdefault(call["tool"], []).append(value)
    # A turn that may only finish has no choice to reason about: its thought would repeat the summary
    # (or copy the prompt's last line, as the 1.5B model's finishing thoughts did), decoding some 50 tokens
    # for nothing. The reply is the reflection and the call.
    thinking = allowed != ["finish"]
    alternatives = []
    for name, schema in TOOL_SCHEMAS.items():
        if name not in allowed:
            continue
        if name in excluded_values:
            key = REPEAT_KEY[name]
            schema = json.loads(json.dumps(schema))
            schema["properties"][key] = {"type": "string", "pattern": not_one_of(excluded_values[name])}
            schema["required"] = [key, *[r for r in schema["required"] if r != key]]
        properties = {
            **(REFLECTION_PROPERTIES if reflect else {}),
            **({"thought": {"type": "string", "maxLength": THOUGHT_CHARS}} if thinking else {}),
            "tool": {"const": name},
            "args": schema,
        }
        alternatives.append(
            {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            }
        )
    return {"anyOf": alternatives}


REFLECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "progress": {"type": "boolean"},
        "assessment": {"type": "string", "maxLength": 160},
        "next": {"type": "string", "maxLength": 160},
    },
    "required": ["progress", "assessment", "next"],
    "additionalProperties": False,
}
THINK_SCHEMA = think_schema()
THINK_REFLECT_SCHEMA = think_schema(reflect=True)
REPLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "goal": {"type": "string", "maxLength": 200},
        "failed": {"type": "string", "maxLength": 200},
        "new_approach": {"type": "string", "maxLength": 200},
    },
    "required": ["goal", "failed", "new_approach"],
    "additionalProperties": False,
}
