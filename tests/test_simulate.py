"""The simulator itself: the fault spec a user types, auth and error faults on every fake,
and the public test-media module."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from calliope_graph import testing
from calliope_graph.cli import EXIT_CODES, main
from calliope_graph.errors import ConfigurationError
from calliope_graph.simulate import (
    FAULT_KINDS,
    FAULT_OPTIONS,
    Fault,
    FaultSpecError,
    ProviderFake,
    Simulator,
    parse_faults,
)
from calliope_graph.simulate._core import fake_names

ROOT = Path(__file__).resolve().parent.parent

# (spec, the bad part it must name, what it must list)
BAD_SPECS = [
    ("bogus@openai", "'bogus'", FAULT_KINDS),
    ("rate_limit@openai:probability=lots", "probability='lots'", ("a number from 0 to 1",)),
    ("rate_limit@openai:firstn=1", "'firstn'", (*FAULT_OPTIONS, "did you mean 'first_n'")),
    ("rate_limit@opneai", "'opneai'", ("openai", "stability", "did you mean 'openai'")),
    ("hang;rate_limit:first_n", "'first_n' has no value", ("first_n=<",)),
    ("latency:seconds=-1", "seconds='-1'", ("0 or more",)),
    ("content_policy:pattern=(", "pattern='('", ("regular expression",)),
]


# -- the fault spec ------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "bad", "listed"), BAD_SPECS)
def test_a_bad_fault_spec_is_one_clear_error(spec: str, bad: str, listed: tuple[str, ...]) -> None:
    with pytest.raises(FaultSpecError) as info:
        parse_faults(spec)
    message = str(info.value)
    assert bad in message
    for name in listed:
        assert name in message
    assert isinstance(info.value, ConfigurationError)


@pytest.mark.parametrize(("spec", "bad", "listed"), BAD_SPECS[:3])
def test_a_bad_faults_option_is_a_usage_error(spec: str, bad: str, listed: tuple[str, ...]) -> None:
    result = CliRunner().invoke(
        main, ["run", "illustrate", "--simulate", "--input", "text=x", "--faults", spec]
    )
    assert result.exit_code == EXIT_CODES["usage"] == 2
    assert "--faults" in result.stderr and bad in result.stderr
    assert all(name in result.stderr for name in listed)
    assert "Traceback" not in result.output


def test_good_fault_specs_still_parse() -> None:
    faults = parse_faults(
        "rate_limit@openai:first_n=2,retry_after=0.1; hang@azure_vision ;latency:seconds=0.3;"
        "content_policy@stability:pattern=fox|kite,endpoint=v2;empty@anthropic:probability=0.5"
    )
    assert [f.kind for f in faults] == ["rate_limit", "hang", "latency", "content_policy", "empty"]
    assert faults[0].first_n == 2 and faults[0].retry_after == 0.1
    assert faults[1].provider == "azure_vision" and faults[2].provider is None
    assert faults[3].pattern == "fox|kite" and faults[3].endpoint == "v2"
    assert faults[4].probability == 0.5
    assert parse_faults("") == [] and parse_faults(" ; ") == []


def test_a_misspelt_fault_argument_in_python_is_refused() -> None:
    with pytest.raises(ValidationError, match="firstn"):
        Fault(kind="rate_limit", firstn=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="firstn"):
        Simulator().add_fault(kind="rate_limit", firstn=1)


def test_the_documented_options_are_the_faults_fields() -> None:
    assert set(FAULT_OPTIONS) == set(Fault.model_fields) - {"kind", "provider"}


def test_the_readme_lists_every_fault_kind_and_option() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sentence = readme[readme.index("`--faults` injects failures") :].split("\n\n")[0]
    listed = set(re.findall(r"`(\w+)`", sentence))
    assert set(FAULT_KINDS) <= listed
    assert set(FAULT_OPTIONS) <= listed


# -- auth and error faults, as each fake declares them ---------------------------------------
def fakes() -> list[ProviderFake]:
    sim = Simulator()
    return [sim.fake(name) for name in fake_names()]


def key_header(fake: ProviderFake, key: str) -> dict[str, str]:
    """The key the way the fake reads it first (``Authorization: Bearer <key>``, ...)."""
    credential = fake.auth.credentials[0]
    scheme = credential.schemes[:1]
    return {credential.header: " ".join((*(s.title() for s in scheme), key))}


def url_of(fake: ProviderFake) -> str:
    host = fake.hosts[0]
    return f"https://{'calliope-sim' + host if host.startswith('.') else host}/v1/anything"


def text_of(message: str) -> str:
    """The fixed part of a declared message (before any ``{key}``/``{retry_after}``)."""
    return message.split("{")[0]


@pytest.mark.parametrize("fake", fakes(), ids=lambda f: f.name)
async def test_every_fake_answers_its_declared_401s(fake: ProviderFake) -> None:
    sim = Simulator()
    right = sim.key_for(fake.name)
    async with sim.client() as client:
        missing = await client.post(url_of(fake), json={})
        bad = await client.post(url_of(fake), json={}, headers=key_header(fake, right + "-not"))
        sim.add_fault(kind="auth", provider=fake.name)
        revoked = await client.post(url_of(fake), json={}, headers=key_header(fake, right))
    # 401s, except Google's: 403 PERMISSION_DENIED without a key, 400 API_KEY_INVALID with a
    # wrong one (the engine maps both to AuthenticationError).
    assert missing.status_code == fake.auth.missing.status in (401, 403)
    assert text_of(fake.auth.missing.message) in missing.text
    assert bad.status_code == revoked.status_code == fake.auth.invalid.status in (400, 401)
    assert text_of(fake.auth.invalid.message) in bad.text
    assert text_of(fake.auth.invalid.message) in revoked.text
    assert right not in bad.text + revoked.text


@pytest.mark.parametrize("kind", ["rate_limit", "server_error", "unavailable", "overloaded"])
@pytest.mark.parametrize("fake", fakes(), ids=lambda f: f.name)
async def test_every_fake_answers_error_faults_as_declared(fake: ProviderFake, kind: str) -> None:
    sim = Simulator(faults=[Fault(kind=kind, provider=fake.name, retry_after=7)])
    declared = getattr(fake.errors, kind)
    headers = key_header(fake, sim.key_for(fake.name))
    async with sim.client() as client:
        response = await client.post(url_of(fake), json={}, headers=headers)
    assert response.status_code == declared.status
    assert text_of(declared.message) in response.text
    if kind == "rate_limit" and fake.retry_after_header:
        assert response.headers["retry-after"] == "7"
    elif kind == "rate_limit":  # the wait is in the body only (Gemini)
        assert "retry-after" not in response.headers and "7s" in response.text
    if kind == "rate_limit":
        assert "{retry_after}" not in response.text + str(response.headers)


# -- what a fault spec promises, it does ---------------------------------------------------
def _documented_endpoints(fake: type[ProviderFake]) -> set[str]:
    """The endpoint names a fake's module docstring lists "for counting"."""
    import sys

    doc = sys.modules[fake.__module__].__doc__ or ""
    if "for counting" not in doc:
        return set()
    listed = doc[doc.index("for counting") :].split("\n\n")[0]
    return set(re.findall(r"``([\w.-]+)``", listed))


@pytest.mark.parametrize("fake", fakes(), ids=lambda f: f.name)
def test_every_fakes_endpoints_are_declared_and_accepted_by_a_fault(fake: ProviderFake) -> None:
    declared = set(fake.endpoints)
    assert declared, fake.name
    assert _documented_endpoints(type(fake)) <= declared
    assert set(fake.limit_endpoints or ()) <= declared
    for name in declared:
        assert parse_faults(f"server_error@{fake.name}:endpoint={name}")[0].endpoint == name
    # a part of a name still selects every endpoint containing it
    assert parse_faults(f"hang@{fake.name}:endpoint={fake.endpoints[0][:2]}")


@pytest.mark.parametrize("fake", fakes(), ids=lambda f: f.name)
def test_a_mistyped_fault_endpoint_is_refused_naming_the_valid_ones(fake: ProviderFake) -> None:
    typo = fake.endpoints[0][::-1] + "x"
    with pytest.raises(FaultSpecError) as info:
        parse_faults(f"server_error@{fake.name}:endpoint={typo}")
    message = str(info.value)
    assert f"endpoint={typo!r}" in message and "never fire" in message
    assert all(name in message for name in fake.endpoints)


def test_a_fault_endpoint_without_a_provider_may_name_any_fakes_endpoint() -> None:
    assert parse_faults("rate_limit:endpoint=generations.video")[0].provider is None
    with pytest.raises(FaultSpecError, match=r"'chat\.complete'.*chat\.completions"):
        parse_faults("rate_limit:endpoint=chat.complete")
    result = CliRunner().invoke(
        main,
        ["run", "illustrate", "--simulate", "--input", "text=x", "--faults",
         "server_error@openai:endpoint=chat_completions"],
    )  # fmt: skip
    assert result.exit_code == EXIT_CODES["usage"]
    assert "'chat_completions'" in result.stderr and "chat.completions" in result.stderr


@pytest.mark.parametrize("kind", sorted(set(FAULT_KINDS) - {"content_policy", "empty"}))
def test_a_pattern_on_a_fault_that_ignores_prompts_is_refused(kind: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        parse_faults(f"{kind}@openai:pattern=fox")
    message = str(info.value)
    assert f"{kind}@openai:pattern=fox" in message
    assert "content_policy" in message and "drop pattern=" in message
    with pytest.raises(ValidationError, match="drop pattern="):
        Fault(kind=kind, pattern="fox")
    assert parse_faults("content_policy:pattern=fox;empty:pattern=fox")


async def _hang_wait(fault: Fault, timeout: httpx.Timeout) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    sim = Simulator(faults=[fault], sleep=sleep)
    fake = sim.fake("openai")
    async with sim.client(timeout=timeout) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                "https://api.openai.com/v1/chat/completions",
                json={},
                headers=key_header(fake, sim.key_for("openai")),
            )
    return waits


async def test_a_hang_with_seconds_gives_up_after_those_seconds() -> None:
    (fault,) = parse_faults("hang@openai:seconds=2")
    assert await _hang_wait(fault, httpx.Timeout(60.0)) == [2.0]


async def test_a_hang_without_seconds_lasts_until_the_clients_read_timeout() -> None:
    (fault,) = parse_faults("hang@openai")
    assert await _hang_wait(fault, httpx.Timeout(5.0, read=45.0)) == [45.0]


# -- Replicate: a cancelled prediction -------------------------------------------------------
async def test_a_cancelled_predictions_logs_stop_at_the_cancel() -> None:
    sim = Simulator(poll_steps=10**6)
    api = "https://api.replicate.com/v1"
    auth = {"Authorization": f"Bearer {sim.key_for('replicate')}"}
    async with sim.client(headers=auth) as client:
        created = await client.post(
            f"{api}/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "a fox"}},
        )
        prediction = created.json()["id"]
        for _ in range(3):
            await client.get(f"{api}/predictions/{prediction}")
        cancelled = await client.post(f"{api}/predictions/{prediction}/cancel")
        shown = await client.get(f"{api}/predictions/{prediction}")
    assert cancelled.json()["status"] == shown.json()["status"] == "canceled"
    logs = shown.json()["logs"].splitlines()
    assert logs[0].startswith("Using seed:")
    assert [line.split("| ")[-1].split(" ")[0] for line in logs[1:]] == [
        "1/1000000",
        "2/1000000",
        "3/1000000",
    ]


# -- the public test-media module ------------------------------------------------------------
def test_the_testing_module_builds_real_media() -> None:
    assert set(testing.__all__) == {n for n in dir(testing) if not n.startswith("_")} - {
        "annotations"
    }
    png = testing.image_bytes("a red kite", 64, 48)
    jpeg = testing.image_bytes("a red kite", 64, 48, fmt="JPEG")
    assert png.startswith(b"\x89PNG") and jpeg.startswith(b"\xff\xd8")
    assert png == testing.image_bytes("a red kite", 64, 48)  # deterministic
    info = testing.mp4_info(testing.mp4_bytes("a fox", width=32, height=16, seconds=1, fps=2))
    assert info["codec"] == "avc1" and (info["width"], info["height"]) == (32, 16)
    assert info["samples"] == 2
    assert testing.is_wav(testing.wav_bytes("tone")) and not testing.is_wav(png)
    assert testing.is_mp3(testing.mp3_bytes(0.5)) and not testing.is_mp3(png)
    assert testing.describe_image(png)["width"] == 64
    assert re.search("clever|jumps", testing.story_text("a clever fox jumps"))
    request = httpx.Request("POST", "https://x.test", files={"prompt": (None, "hi")})
    request.read()
    assert testing.multipart_form(request)[0] == {"prompt": "hi"}
    for name in testing.__all__:
        assert getattr(testing, name).__doc__, name


# -- latency -------------------------------------------------------------------------------------
async def _one_image(sim: Simulator, clock: Any, tmp_path: Path) -> None:
    from _support import make_ctx

    from calliope_graph.nodes import TextToImage

    ctx = make_ctx(sim.transport(), sim.keys(), clock, tmp_path / "out")
    try:
        await TextToImage("stability-core").run(ctx, prompt="a lighthouse")
    finally:
        await ctx.aclose()


async def test_a_providers_answer_is_made_while_its_latency_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A latency is the provider's response time, its work included: a picture the fake
    draws in 50 ms under a 500 ms latency answers at 500 ms, not 550 (a benchmark's
    critical path is the latencies it configured)."""
    events: list[str] = []

    async def sleep(seconds: float) -> None:
        events.append(f"latency {seconds:g}")
        for _ in range(5):  # the latency runs: other tasks may work meanwhile
            await asyncio.sleep(0)
        events.append("answered")

    sim = Simulator(sleep=sleep, latency={"stability": 0.5})
    fake = sim.fake("stability")
    handle = fake.handle

    async def drawn(request: httpx.Request) -> httpx.Response:
        events.append("drawing")
        return await handle(request)

    monkeypatch.setattr(fake, "handle", drawn)
    await _one_image(sim, sleep, tmp_path)
    assert events == ["latency 0.5", "drawing", "answered"]


async def test_a_latency_fault_adds_to_the_latency_and_an_error_comes_after_it(
    tmp_path: Path,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    sim = Simulator(
        sleep=sleep, latency={"stability": 0.5}, faults=parse_faults("latency@stability:seconds=2")
    )
    await _one_image(sim, sleep, tmp_path)
    assert sorted(waits)[-2:] == [0.5, 2.0]
    waits.clear()
    failing = Simulator(
        sleep=sleep, latency={"stability": 0.5}, faults=parse_faults("server_error@stability")
    )
    with pytest.raises(Exception):  # noqa: B017 (the error class is the engine's business)
        await _one_image(failing, sleep, tmp_path)
    assert 0.5 in waits
