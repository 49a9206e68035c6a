"""A prompt template's variables are read without LangChain (nodes/_template_vars.py), so
validation does not load it: they must be exactly LangChain's, and what LangChain refuses is
refused at validation, as before."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.prompts import PromptTemplate as LCPromptTemplate

from calliope_graph.errors import ConfigurationError
from calliope_graph.nodes import PromptTemplate
from calliope_graph.nodes._template_vars import template_variables

FSTRINGS = [
    "",
    "no variables at all",
    "{a}",
    "{a} and {b} and {a} again",
    "{a!r} {b:>10} {c!s:^5}",
    "{{escaped}} {real}",
    "{}",
    "tail {x}}}",
    "{ spaced }",
]

MUSTACHES = [
    "",
    "plain",
    "{{a}}",
    "{{ a }} {{b}} {{a}}",
    "{{analysis.description}} and {{analysis.summary}}",
    "{{{raw}}} {{&amp}}",
    "{{#items}}{{name}} {{.}}{{/items}}",
    "{{^empty}}none{{/empty}}",
    "{{#outer}}{{#inner}}{{x}}{{/inner}}{{/outer}} {{after}}",
    "{{! a comment }}{{> partial}}{{kept}}",
    "{{=<% %>=}}<%swapped%> {{literal}}",
    "{{=<% %>=}}<%{braced}%>",
    "line one\n  {{#s}}\n  {{v}}\n  {{/s}}\n{{w}}",
    "{single} braces stay text",
    "{{a.b.c}}",
    "{{{notraw}}",
]

MUSTACHE_ERRORS = [
    "{{unclosed",
    "{{  }}",
    "{{#open}}never closed",
    "{{/nothing}}",
    "{{#a}}{{/b}}",
    "{{=<% %>}}",
]

FSTRING_ERRORS = ["{a.b}", "{a[0]}", "{0}", "{a:{b}}", "single } brace", "{unclosed"]


def _langchain(template: str, fmt: Any) -> list[str]:
    return sorted(LCPromptTemplate.from_template(template, template_format=fmt).input_variables)


@pytest.mark.parametrize("template", FSTRINGS)
def test_fstring_variables_are_langchains(template: str) -> None:
    assert template_variables(template, None, "f-string") == _langchain(template, "f-string")


@pytest.mark.parametrize("template", MUSTACHES)
def test_mustache_variables_are_langchains(template: str) -> None:
    assert template_variables(template, None, "mustache") == _langchain(template, "mustache")


@pytest.mark.parametrize("template", MUSTACHE_ERRORS)
def test_what_langchain_refuses_in_mustache_is_refused(template: str) -> None:
    with pytest.raises(SyntaxError):  # LangChain's ChevronError
        LCPromptTemplate.from_template(template, template_format="mustache")
    with pytest.raises(ValueError, match=r"mustache|delimiter"):
        template_variables(template, None, "mustache")


@pytest.mark.parametrize("template", FSTRING_ERRORS)
def test_what_langchain_refuses_in_fstrings_is_refused(template: str) -> None:
    with pytest.raises(ValueError):
        LCPromptTemplate.from_template(template, template_format="f-string")
    with pytest.raises(ValueError):
        template_variables(template, None, "f-string")


CHATS: list[tuple[str, list[tuple[str, str]]]] = [
    ("f-string", [("system", "You tell {genre} stories."), ("human", "{prompt}")]),
    ("f-string", [("user", "{a}"), ("assistant", "{b}"), ("ai", "{c}"), ("system", "{a}")]),
    ("f-string", [("system", "hi {a}"), ("placeholder", "{history}"), ("human", "{b}")]),
    ("mustache", [("system", "{{#s}}{{x}}{{/s}}"), ("human", "{{q.text}}")]),
]


@pytest.mark.parametrize(("fmt", "messages"), CHATS)
def test_chat_variables_are_langchains(fmt: Any, messages: list[tuple[str, str]]) -> None:
    chat = ChatPromptTemplate.from_messages(messages, template_format=fmt)
    assert template_variables(None, messages, fmt) == sorted(chat.input_variables)


@pytest.mark.parametrize("messages", [[("robot", "{a}")], [("placeholder", "history")]])
def test_what_langchain_refuses_in_chats_is_refused(messages: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        ChatPromptTemplate.from_messages(messages)
    with pytest.raises(ValueError):
        template_variables(None, messages, "f-string")


def test_a_bad_template_is_a_configuration_error_naming_the_node() -> None:
    with pytest.raises(ConfigurationError, match=r"'greet': invalid prompt template"):
        PromptTemplate(name="greet", template="{{#open}}", template_format="mustache")
    with pytest.raises(ConfigurationError, match=r"'greet': invalid prompt template"):
        PromptTemplate(name="greet", messages=[["robot", "{a}"]])


async def test_the_langchain_template_is_built_when_the_node_runs(ctx: Any) -> None:
    node = PromptTemplate(name="n", messages=[["system", "Be {mood}."], ["human", "{q}"]])
    assert node._built is None and node.variables == ["mood", "q"]
    out = await node.run(ctx, mood="brief", q="Why?")
    assert [m.content for m in out["messages"]] == ["Be brief.", "Why?"]
    text = PromptTemplate(name="t", template="{{a.b}}!", template_format="mustache")
    assert (await text.run(ctx, a={"b": "hi"}))["text"] == "hi!"
