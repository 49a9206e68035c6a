"""Chat messages in, langchain-core messages out.

Engines take ``Sequence[BaseMessage]``; callers may pass a plain string, OpenAI-format
dicts (``{"role": "user", "content": ...}``) or langchain-core messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from calliope_graph.errors import ConfigurationError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = ["as_messages"]


def as_messages(value: Any) -> list[BaseMessage]:
    """Normalise ``value`` to a list of langchain-core messages, or say what is wrong.

    LangChain is imported here, when a node runs: the nodes that import this module load
    with ``calliope_graph.nodes`` (and so with validation), which must not load LangChain."""
    from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages

    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, Sequence):
        try:
            return list(convert_to_messages(list(value)))
        except (ValueError, NotImplementedError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"Cannot read the messages ({exc}): pass OpenAI-format dicts "
                "({'role': 'user', 'content': '...'}), langchain-core messages or a string."
            ) from None
    raise ConfigurationError(
        f"Messages must be a list of messages or a string, not {type(value).__name__}."
    )
