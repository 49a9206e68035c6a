"""A prompt template's variables, read without LangChain.

Validating a flow needs only the names a ``prompt_template`` node's template reads (its input
ports); importing ``langchain_core.prompts`` for that costs a large share of
``calliope-graph validate`` (it loads langsmith and pydantic models by the hundred). So the
names are read here by hand, to the same rules as LangChain's ``get_template_variables``
(``langchain_core.prompts.string``) and ``ChatPromptTemplate.from_messages``, refusing what
they refuse; the LangChain template itself is built when the node first runs. A test
(tests/test_prompt_template_vars.py) compares both on a range of templates, so they cannot
drift apart unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from string import Formatter

__all__ = ["detect_format", "fstring_variables", "mustache_variables", "template_variables"]

#: The chat roles LangChain turns into message templates (``placeholder`` is handled apart).
MESSAGE_ROLES = frozenset({"human", "user", "ai", "assistant", "system"})


def fstring_variables(template: str) -> set[str]:
    """The fields of an f-string template, as LangChain's ``validate_f_string_template``
    reads them: no attribute access or indexing, no all-digit names, no nested fields."""
    names: set[str] = set()
    for _, name, spec, _ in Formatter().parse(template):  # a lone brace: ValueError
        if name is None:
            continue
        if "." in name or "[" in name or "]" in name:
            raise ValueError(
                f"Invalid variable name {name!r} in f-string template. Variable names cannot "
                "contain attribute access (.) or indexing ([]); use template_format: mustache "
                "for {{value.field}}."
            )
        if name.isdigit():
            raise ValueError(
                f"Invalid variable name {name!r} in f-string template. Variable names cannot "
                "be all digits as they are interpreted as positional arguments."
            )
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(
                "Invalid format specifier in f-string template. Nested replacement fields "
                "are not allowed."
            )
        names.add(name)
    return names


#: A mustache tag's first character and what it makes the tag (LangChain's ``parse_tag``).
_TAG_KINDS = {
    "!": "comment",
    "#": "section",
    "^": "inverted section",
    "/": "end",
    ">": "partial",
    "=": "set delimiter",
    "{": "no escape?",
    "&": "no escape",
}
_VARIABLE_KINDS = frozenset({"variable", "section", "inverted section", "no escape"})


def mustache_variables(template: str) -> set[str]:
    """The top-level names a mustache template reads, as LangChain's
    ``mustache_template_vars`` finds them with its tokenizer (``langchain_core.utils.mustache``):
    ``{{name}}``, ``{{{name}}}``, ``{{&name}}`` and ``{{#name}}`` / ``{{^name}}`` sections
    outside any section; ``{{a.b}}`` reads ``a``; ``{{.}}``, comments and partials read
    nothing; ``{{=<% %>=}}`` changes the delimiters. Hand-written rather than a single
    regex because sections nest and delimiters change; what the tokenizer refuses (an
    unclosed or empty tag, an end tag that closes nothing or the wrong section, a section
    never closed) is a ValueError here."""
    names: set[str] = set()
    sections: list[str] = []
    left, right = "{{", "}}"
    rest = template
    while True:
        _, found, rest = rest.partition(left)
        if not found:
            break
        tag, found, rest = rest.partition(right)
        if not found:
            raise ValueError(f"unclosed mustache tag {left}{tag[:40]}")
        if not tag.strip():
            raise ValueError(f"empty mustache tag {left}{tag}{right}")
        kind = _TAG_KINDS.get(tag[0], "variable")
        if kind != "variable":
            tag = tag[1:]
        if kind == "set delimiter":
            if not tag.endswith("="):
                raise ValueError(f"unclosed set delimiter tag {left}={tag}{right}")
            parts = tag[:-1].strip().split(" ")
            left, right = parts[0], parts[-1]
            continue
        if kind == "no escape?" and (left, right) == ("{{", "}}") and rest.startswith("}"):
            rest, kind = rest[1:], "no escape"
        key = tag.strip()
        if kind == "end":
            if not sections:
                raise ValueError(f"mustache end tag {{{{/{key}}}}} closes no open section")
            if (last := sections.pop()) != key:
                raise ValueError(
                    f"mustache end tag {{{{/{key}}}}} does not match the open section {last!r}"
                )
            continue
        if kind in _VARIABLE_KINDS and key != "." and not sections:
            names.add(key.split(".")[0])
        if kind in ("section", "inverted section"):
            sections.append(key)
    if sections:
        raise ValueError(f"mustache section {sections[-1]!r} is never closed ({{{{/...}}}})")
    return names


#: A mustache tag naming a value: ``{{name}}``, ``{{a.b}}``, ``{{#list}}``, ``{{/list}}``.
_MUSTACHE_TAG = re.compile(r"\{\{\s*[#^/&]?\s*(?:[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*|\.)\s*\}\}")
#: An f-string field once the ``{{``/``}}`` escapes are taken out: ``{name}``.
_FSTRING_FIELD = re.compile(r"\{[^{}]*\}")


def detect_format(texts: Iterable[str]) -> str:
    """The template format a prompt template's texts are written in, when none is set:
    ``mustache`` when they hold a mustache tag (``{{name}}``, ``{{a.b}}``, ``{{#list}}``) and
    no single-brace f-string field; else ``f-string`` (LangChain's default, where ``{{`` is an
    escaped brace). So ``{{story.title}}`` just works, and every f-string template — with or
    without escaped braces around JSON — keeps its meaning; ``template_format`` overrides."""
    texts = list(texts)
    if not any(_MUSTACHE_TAG.search(text) for text in texts):
        return "f-string"
    for text in texts:
        if _FSTRING_FIELD.search(text.replace("{{", "").replace("}}", "")):
            return "f-string"
    return "mustache"


def _variables(template: str, template_format: str) -> set[str]:
    if template_format == "mustache":
        return mustache_variables(template)
    return fstring_variables(template)


def template_variables(
    template: str | None, messages: Iterable[tuple[str, str]] | None, template_format: str
) -> list[str]:
    """The input variables LangChain's ``PromptTemplate.from_template(template)`` or
    ``ChatPromptTemplate.from_messages(messages)`` would have, sorted; a ValueError for a
    template either would refuse. A ``placeholder`` message is optional (LangChain fills it
    with no messages), so it is not an input variable."""
    if template is not None:
        return sorted(_variables(template, template_format))
    names: set[str] = set()
    for role, text in messages or ():
        if role in MESSAGE_ROLES:
            names |= _variables(text, template_format)
        elif role == "placeholder":
            if not text or text[0] != "{" or text[-1] != "}":
                raise ValueError(
                    f"Invalid placeholder template: {text}. Expected a variable name "
                    "surrounded by curly braces."
                )
        else:
            raise ValueError(
                f"Unexpected message type: {role}. Use one of 'human', 'user', 'ai', "
                "'assistant', 'system' or 'placeholder'."
            )
    return sorted(names)
