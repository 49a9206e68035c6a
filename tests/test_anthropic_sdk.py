"""The official ``anthropic`` SDK parses what the Anthropic fake answers (and raises its errors).

The installed SDK sends through ``httpx2`` (it rejects ``httpx`` clients), so the simulator's
handler is bridged into an ``httpx2.MockTransport``: the SDK's request is replayed as an
``httpx`` request to the simulator and its answer copied back.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from calliope_graph.simulate import Simulator
from calliope_graph.testing import describe_image, image_bytes

BASE = "https://api.anthropic.com"


def bridged_client(sim: Simulator) -> httpx2.AsyncClient:
    """An httpx2 client whose every request is answered by the simulator."""

    async def handler(request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        replay = httpx.Request(
            request.method, str(request.url), headers=request.headers.multi_items(), content=body
        )
        answer = await sim.handle(replay)
        content = await answer.aread()
        return httpx2.Response(
            answer.status_code, headers=answer.headers.multi_items(), content=content
        )

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


def sdk(sim: Simulator, key: str | None = None) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key=key or sim.key_for("anthropic"),
        base_url=BASE,
        http_client=bridged_client(sim),
        max_retries=0,
    )


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with sdk(sim) as c:
        yield c


async def test_text_message(client: anthropic.AsyncAnthropic, sim: Simulator) -> None:
    message = await client.messages.create(
        model="claude-sonnet-5",
        max_tokens=200,
        system="You tell stories.",
        messages=[{"role": "user", "content": "A lantern in the fog"}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-sonnet-5"
    assert message.stop_reason == "end_turn"
    block = message.content[0]
    assert block.type == "text" and "lantern" in block.text.lower()
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert sim.count("anthropic", "messages") == 1


async def test_forced_tool_use(client: anthropic.AsyncAnthropic) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "objects": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title", "objects"],
    }
    message = await client.messages.create(
        model="claude-sonnet-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "Record the scene."}],
        tools=[{"name": "record_scene", "description": "Record it.", "input_schema": schema}],
        tool_choice={"type": "tool", "name": "record_scene"},
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "record_scene"
    assert block.id.startswith("toolu_")
    assert isinstance(block.input, dict)
    assert isinstance(block.input["title"], str) and isinstance(block.input["objects"], list)


async def test_image_message(client: anthropic.AsyncAnthropic) -> None:
    raw = image_bytes("a harbour", 200, 100, "PNG")
    message = await client.messages.create(
        model="claude-sonnet-5",
        max_tokens=500,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": base64.b64encode(raw).decode(),
                        },
                    },
                    {"type": "text", "text": "Describe this image as JSON."},
                ],
            }
        ],
    )
    block = message.content[0]
    assert block.type == "text"
    assert describe_image(raw)["caption"] in block.text


async def test_refusal_and_empty(client: anthropic.AsyncAnthropic, sim: Simulator) -> None:
    sim.add_fault(kind="content_policy", provider="anthropic", pattern="forbidden")
    sim.add_fault(kind="empty", provider="anthropic", pattern="silence")
    kwargs: dict[str, Any] = {"model": "claude-test", "max_tokens": 50}
    refused = await client.messages.create(
        messages=[{"role": "user", "content": "forbidden"}], **kwargs
    )
    empty = await client.messages.create(
        messages=[{"role": "user", "content": "silence"}], **kwargs
    )
    assert refused.stop_reason == "refusal" and refused.content == []
    assert empty.content[0].type == "text" and empty.content[0].text == ""


@pytest.mark.parametrize(
    ("kind", "cls", "status"),
    [
        ("rate_limit", anthropic.RateLimitError, 429),
        ("overloaded", anthropic.OverloadedError, 529),
        ("server_error", anthropic.InternalServerError, 500),
        ("auth", anthropic.AuthenticationError, 401),
    ],
)
async def test_faults_raise_the_sdk_errors(
    client: anthropic.AsyncAnthropic, sim: Simulator, kind: str, cls: type[Exception], status: int
) -> None:
    sim.add_fault(kind=kind, provider="anthropic", retry_after=3)
    with pytest.raises(cls) as info:
        await client.messages.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    error: Any = info.value
    assert error.status_code == status
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] in (
        "rate_limit_error",
        "overloaded_error",
        "api_error",
        "authentication_error",
    )
    assert error.request_id and error.request_id.startswith("req_")
    if kind == "rate_limit":
        assert error.response.headers["retry-after"] == "3"


async def test_wrong_key_and_bad_request(sim: Simulator) -> None:
    async with sdk(sim, key="sk-ant-wrong-0000") as wrong:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await wrong.messages.create(
                model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    assert "invalid x-api-key" in str(auth.value)
    async with sdk(sim) as client:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(
                model="claude-test", max_tokens=0, messages=[{"role": "user", "content": "hi"}]
            )
    assert bad.value.status_code == 400 and "max_tokens" in str(bad.value)
