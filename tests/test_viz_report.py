"""The HTML run report, parsed: self-contained, complete, redacted, and fine mid-run."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _viz_sample import FLOW_NODES, sample_trace

from calliope_graph.flow import NodeExecution, Trace
from calliope_graph.viz import render_report

SECRET = "sk-test-SECRET123456"


class Page(HTMLParser):
    """Every start tag with its attributes, plus the text and style/script bodies."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.raw: list[str] = []
        self._in: str | None = None
        self._section: str | None = None
        self._depth = 0
        self.sections: dict[str, list[str]] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("style", "script"):
            self._in = tag
        if tag == "section":
            if self._section:
                self._depth += 1
            elif attrs and dict(attrs).get("id"):
                self._section, self._depth = dict(attrs)["id"], 1

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None
        if self._section and tag == "section":
            self._depth -= 1
            if self._depth == 0:
                self._section = None

    def handle_data(self, data: str) -> None:
        (self.raw if self._in else self.text).append(data)
        if self._section and not self._in:
            self.sections.setdefault(self._section, []).append(data)

    def section_text(self, section_id: str) -> str:
        return "".join(self.sections.get(section_id, []))

    def find(
        self, tag: str | None = None, cls: str | None = None, **attrs: str
    ) -> list[dict[str, str]]:
        out = []
        for name, a in self.tags:
            if tag and name != tag:
                continue
            if cls and cls not in a.get("class", "").split():
                continue
            if any(a.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            out.append(a)
        return out


def _status(attrs: dict[str, str]) -> str:
    return next(c[7:] for c in attrs["class"].split() if c.startswith("status-"))


def _render(tmp_path: Path, **kw: str) -> tuple[Path, str, Page]:
    trace = sample_trace(tmp_path / "run", **kw)
    path = render_report(trace, tmp_path / "run" / "report.html")
    text = path.read_text(encoding="utf-8")
    return path, text, Page(text)


def test_report_is_self_contained(tmp_path: Path) -> None:
    _, text, page = _render(tmp_path)
    for _, attrs in page.tags:
        for key in ("src", "href", "srcset", "poster", "data", "action"):
            value = attrs.get(key, "")
            assert not re.match(r"^\s*(https?:)?//", value, re.I), (key, value)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", text, re.I)
    assert not re.search(r"@import|<link\b", text, re.I)
    assert all("src" not in a for a in page.find("script"))  # scripts are inline
    # The only absolute URL is the SVG namespace, which is a name, not a request.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) <= {"http://www.w3.org/2000/svg"}
    assert page.find("meta", http_equiv="Content-Security-Policy")
    assert not page.find("meta", http_equiv="refresh")  # finished: no reload


def test_report_shows_nodes_coloured_by_outcome_and_the_path(tmp_path: Path) -> None:
    _, _, page = _render(tmp_path)
    nodes = {a["data-node"]: a["class"].split() for a in page.find("g", cls="node")}
    assert set(FLOW_NODES) <= set(nodes)
    assert "status-ok" in nodes["story"]
    assert "status-skipped" in nodes["llm_vision"]
    assert "status-ok" in nodes["illustration"]  # the rewrite loop's second run succeeded
    assert "status-not_run" in nodes["dalle"]
    assert "status-ok" in nodes["continue.llm_vision"]
    taken = {(a["data-source"], a["data-target"], a["data-kind"]) for a in page.find(cls="taken")}
    assert ("story", "illustration", "data") in taken
    assert ("illustration", "censor", "rewrite") in taken
    assert ("censor", "illustration", "rewrite_back") in taken
    assert ("llm_vision", "continue.llm_vision", "continue") in taken
    assert ("illustration", "dalle", "fallback") not in taken


def test_timeline_has_one_bar_per_attempt_and_iteration(tmp_path: Path) -> None:
    _, _, page = _render(tmp_path)
    bars = page.find("rect", cls="bar")
    story = [b for b in bars if b["data-node"] == "story"]
    assert len(story) == 3  # two retried attempts and the one that worked
    assert [_status(b) for b in story] == ["retry", "retry", "ok"]
    assert [b["data-attempt"] for b in story] == ["1", "2", "3"]
    ill = [b for b in bars if b["data-node"] == "illustration"]
    assert sorted(b["data-iteration"] for b in ill) == ["1", "2"]
    # Parallel analyses overlap in time: the azure bar starts inside the llm_vision bar.
    llm = next(b for b in bars if b["data-node"] == "llm_vision")
    azure = next(b for b in bars if b["data-node"] == "azure_vision")
    llm_x0, llm_x1 = float(llm["x"]), float(llm["x"]) + float(llm["width"])
    assert llm_x0 <= float(azure["x"]) < llm_x1


def test_node_details_show_media_text_and_errors(tmp_path: Path) -> None:
    path, text, page = _render(tmp_path)
    sections = {a["data-node"] for a in page.find(cls="node-detail")}
    assert set(FLOW_NODES) <= sections
    thumbs = page.find("img", cls="thumb")
    assert {t["src"] for t in thumbs} == {"webcam.png", "illustration.png"}
    for thumb in thumbs:
        assert (path.parent / thumb["src"]).is_file()
    audio = page.find("audio")
    assert audio and audio[0]["src"] == "narration.wav" and "controls" in audio[0]
    body = "".join(page.text)
    assert "llm_vision timed out after 20s" in body
    assert "content_policy" in body
    # Text is escaped, never markup.
    assert "<b>walked</b>" not in text
    assert "&lt;b&gt;walked&lt;/b&gt;" in text
    assert "Once upon a time a fox <b>walked</b> by the river & sang." in body


def test_media_links_are_relative_to_the_report_folder(tmp_path: Path) -> None:
    trace = sample_trace(tmp_path / "run")
    path = render_report(trace, tmp_path / "elsewhere" / "deeper" / "report.html")
    page = Page(path.read_text(encoding="utf-8"))
    srcs = {t["src"] for t in page.find("img", cls="thumb")}
    assert srcs == {"../../run/webcam.png", "../../run/illustration.png"}
    for src in srcs:
        assert (path.parent / src).resolve().is_file()


def test_remote_media_is_never_loaded(tmp_path: Path) -> None:
    trace = sample_trace(tmp_path / "run")
    trace.outputs["remote"] = {"type": "image", "path": "https://cdn.example.com/x.png"}
    path = render_report(trace, tmp_path / "run" / "report.html")
    text = path.read_text(encoding="utf-8")
    assert "cdn.example.com" not in "".join(
        a.get("src", "") + a.get("href", "") for _, a in Page(text).tags
    )


def test_secrets_are_redacted(tmp_path: Path) -> None:
    _, text, page = _render(tmp_path)
    assert SECRET not in text
    assert "SECRET123456" not in text
    assert ">abc<" not in text  # nested token param
    assert "redacted" in "".join(page.text)
    assert "4.0" in "".join(page.text)  # ordinary params stay readable


def test_key_shaped_values_are_redacted_everywhere(tmp_path: Path) -> None:
    trace = sample_trace(tmp_path / "run")
    trace.executions[0].error = "401 from openai with Authorization: Bearer sk-abcdefghijklmnop1234"
    trace.executions[1].outputs["echo"] = "the key was sk-abcdefghijklmnop1234"
    text = render_report(trace, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "abcdefghijklmnop1234" not in text


def test_summary_has_time_critical_path_providers_and_fallbacks(tmp_path: Path) -> None:
    _, _, page = _render(tmp_path)
    body = " ".join("".join(page.text).split())
    assert "31.05 s" in body
    summary = " ".join(page.section_text("summary").split())
    for provider in ("openai", "azure_vision", "stability"):
        assert provider in summary
    assert "rewrite:censor" in summary and "continue" in summary
    assert "critical path" in summary.lower()
    critical = summary[summary.lower().index("critical path") :]
    assert re.search(r"story → .*illustration.* → frame", critical)


def test_running_trace_renders_and_reloads(tmp_path: Path) -> None:
    _, text, page = _render(tmp_path, status="running")
    refresh = page.find("meta", http_equiv="refresh")
    assert refresh and int(refresh[0]["content"]) > 0
    running = [b for b in page.find("rect", cls="bar") if _status(b) == "running"]
    assert [b["data-node"] for b in running] == ["story"]
    nodes = {a["data-node"]: a["class"].split() for a in page.find("g", cls="node")}
    assert "status-running" in nodes["story"]
    assert "status-not_run" in nodes["frame"]
    assert "so far" in text


def test_trace_without_spec_or_executions_still_renders(tmp_path: Path) -> None:
    trace = Trace(flow="empty", thread_id="t", started_at=1.0, status="running")
    path = render_report(trace, tmp_path / "r.html")
    assert "No node has started yet" in path.read_text(encoding="utf-8")
    lone = trace.model_copy(
        update={
            "executions": [
                NodeExecution(node="a", kind="constant", started_at=1.0, ended_at=2.0, status="ok")
            ],
            "status": "ok",
            "ended_at": 2.0,
        }
    )
    saved = lone.save(tmp_path / "trace.json")
    page = Page(render_report(saved, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert [b["data-node"] for b in page.find("rect", cls="bar")] == ["a"]


def test_report_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = sample_trace(tmp_path / "run")
    target = render_report(trace, tmp_path / "report.html")
    before = target.read_text(encoding="utf-8")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("calliope_graph._files.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        render_report(trace, target)
    assert target.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_run_shows_the_error_and_the_failed_node(tmp_path: Path) -> None:
    trace = sample_trace(tmp_path / "run")
    last = trace.executions[-1]
    trace.executions[-1] = last.model_copy(
        update={
            "status": "failed",
            "outputs": {},
            "error_class": "content_policy",
            "error": "refused: <script>alert('x')</script>",
        }
    )
    trace.status, trace.error, trace.outputs = "failed", "Flow failed at 'frame' <img src=x>", {}
    text = render_report(trace, tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    nodes = {a["data-node"]: a["class"].split() for a in page.find("g", cls="node")}
    assert "status-failed" in nodes["frame"]
    assert [a for a in page.find("div", cls="run-error")]
    assert len(page.find("script")) == 1  # ours; the error's script is text
    assert "&lt;script&gt;alert(" in text
    assert not [a for a in page.find("img") if a.get("src") == "x"]
    assert "The run produced no outputs." in "".join(page.text)


def test_parameter_redaction_keeps_ordinary_parameters() -> None:
    from calliope_graph.viz._report import REDACTED, redact_params

    params = {
        "max_tokens": 300,
        "max_new_tokens": 20,
        "temperature": 0.2,
        "api_key": "abc123",
        "hf_token": "hf_abcdefghijkl",
        "headers": {"Authorization": "Bearer qwertyuiopasdfgh", "Accept": "image/png"},
        "prompt": "use the key sk-live-abcdefghijklmnop please",
        "notes": ["Bearer zxcvbnmasdfghjkl1"],
    }
    out = redact_params(params)
    assert out["max_tokens"] == 300 and out["max_new_tokens"] == 20
    assert out["temperature"] == 0.2
    assert out["api_key"] == REDACTED and out["hf_token"] == REDACTED
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "image/png"}
    assert "abcdefghijklmnop" not in out["prompt"] and out["prompt"].startswith("use the key")
    assert "zxcvbnm" not in out["notes"][0]


def test_drawing_notes_reruns_and_retries(tmp_path: Path) -> None:
    _, _, page = _render(tmp_path)
    notes = {a["data-node"] for a in page.find("g", cls="node-note")}
    assert notes == {"illustration", "story"}
    body = "".join(page.text)
    assert "ran ×2" in body and "2 retries" in body


def test_media_input_given_as_a_path_gets_a_thumbnail(tmp_path: Path) -> None:
    trace = sample_trace(tmp_path / "run")
    trace.inputs["image"] = str(tmp_path / "run" / "webcam.png")  # as the CLI records it
    page = Page(render_report(trace, tmp_path / "run" / "report.html").read_text("utf-8"))
    assert "webcam.png" in {a["src"] for a in page.find("img", cls="thumb")}


def test_missing_media_is_named_not_linked(tmp_path: Path) -> None:
    trace = sample_trace(tmp_path / "run")
    (tmp_path / "run" / "illustration.png").unlink()
    path = render_report(trace, tmp_path / "run" / "report.html")
    page = Page(path.read_text(encoding="utf-8"))
    assert "illustration.png" not in {a["src"] for a in page.find("img")}
    assert "not found beside this report" in "".join(page.text)
