"""A webcam-story-shaped flow and a synthetic trace of one run, shared by the viz tests.

The flow has every edge kind: parallel fan-out (two vision nodes on one image) and a merge,
a ``continue`` route (the LLM vision node may time out), a censor-and-retry loop on the
image node, a fallback to DALL-E, and a fallback-only rewriter.
"""

from __future__ import annotations

import time
from pathlib import Path

from calliope_graph.flow import FlowSpec, NodeExecution, Trace, load_spec
from calliope_graph.testing import image_bytes

FLOW_YAML = """
name: webcam_story
description: A story frame from a webcam picture
inputs:
  image: {type: image, description: the webcam picture}
  theme: {type: text, required: false, default: "a gentle adventure"}
nodes:
  llm_vision:
    kind: analyze_image
    model: openai-gpt-4o
    inputs: {image: inputs.image}
    timeout: 20
    on_error:
      - {when: [timeout, transient], goto: continue}
  azure_vision:
    kind: analyze_image
    model: azure-vision-4.0
    inputs: {image: inputs.image}
  merged:
    kind: merge_analyses
    inputs: {analyses: [llm_vision.analysis, azure_vision.analysis]}
  story_prompt:
    kind: prompt_template
    params:
      template: "Write a story about {theme} in this scene: {scene} <&\\"|#>"
    inputs: {scene: merged.analysis, theme: inputs.theme}
  story:
    kind: text_to_text
    model: openai-gpt-4o
    inputs: {text: story_prompt.text}
    retry: {max_attempts: 3}
  illustration:
    kind: text_to_image
    model: stability-sdxl
    inputs: {prompt: story.text}
    on_error:
      - when: [content_policy]
        rewrite: {via: censor, port: prompt, max_attempts: 3}
      - {when: [any], goto: dalle}
  censor:
    kind: censor_text
    model: openai-gpt-4o-mini
  dalle:
    kind: text_to_image
    model: openai-gpt-image-2
    inputs: {prompt: story.text}
  frame:
    kind: frame
    inputs: {text: story.text, image: illustration.image}
outputs:
  story: story.text
  image: illustration.image
  frame: frame.frame
"""

FLOW_NODES = [
    "llm_vision",
    "azure_vision",
    "merged",
    "story_prompt",
    "story",
    "illustration",
    "censor",
    "dalle",
    "frame",
]


def sample_spec() -> FlowSpec:
    return load_spec("webcam_story.yaml", text=FLOW_YAML)


def sample_trace(
    out_dir: Path, *, status: str = "ok", secret: str = "sk-test-SECRET123456"
) -> Trace:
    """A trace of a run of :func:`sample_spec` with real media files in ``out_dir``.

    The LLM vision node timed out (continue), the image node was refused once (censored and
    rerun), the story node retried a 429 twice, and the image was written to disk.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "webcam.png").write_bytes(image_bytes("a webcam picture", 160, 120))
    (out_dir / "illustration.png").write_bytes(image_bytes("a fox by the river", 256, 256))
    (out_dir / "narration.wav").write_bytes(b"RIFF....WAVEfmt ")
    t0 = time.time() - 60
    image_in = {"type": "image", "path": "webcam.png", "mime": "image/png", "width": 160}
    image_out = {"type": "image", "path": "illustration.png", "mime": "image/png", "width": 256}
    analysis = {
        "type": "analysis",
        "description": "a person at a desk with a lamp",
        "captions": ["a person at a desk"],
        "tags": ["person", "desk", "lamp"],
        "objects": ["lamp"],
        "text": "",
    }

    def ex(node: str, kind: str, start: float, end: float | None, **kw: object) -> NodeExecution:
        return NodeExecution.model_validate(
            {
                "node": node,
                "kind": kind,
                "started_at": t0 + start,
                "ended_at": None if end is None else t0 + end,
                "status": "ok",
                **kw,
            }
        )

    story_text = "Once upon a time a fox <b>walked</b> by the river & sang."
    executions = [
        ex(
            "llm_vision",
            "analyze_image",
            0.0,
            20.0,
            provider="openai",
            model="gpt-4o",
            status="skipped",
            branch="continue",
            error_class="timeout",
            error="llm_vision timed out after 20s",
            inputs={"image": image_in},
            attempts=1,
            calls={"openai": 1},
            retry_times=[(t0 + 0.0, t0 + 20.0)],
        ),
        ex(
            "azure_vision",
            "analyze_image",
            0.1,
            1.4,
            provider="azure_vision",
            model="image-analysis-4.0",
            inputs={"image": image_in},
            outputs={"analysis": analysis},
            attempts=1,
            calls={"azure_vision": 1},
            params={"api_version": "4.0", "api_key": secret, "nested": {"token": "abc"}},
        ),
        ex(
            "merged",
            "merge_analyses",
            20.0,
            20.01,
            inputs={"analyses": [analysis]},
            outputs={"analysis": analysis},
        ),
        ex(
            "story_prompt",
            "prompt_template",
            20.01,
            20.02,
            inputs={"scene": analysis, "theme": "a gentle adventure"},
            outputs={"text": "Write a story about a gentle adventure in this scene"},
            params={"template": "Write a story about {theme} in this scene: {scene}"},
        ),
        ex(
            "story",
            "text_to_text",
            20.02,
            26.0,
            provider="openai",
            model="gpt-4o",
            inputs={"text": "Write a story about a gentle adventure in this scene"},
            outputs={"text": story_text},
            attempts=3,
            retries=2,
            calls={"openai": 3},
            retry_times=[
                (t0 + 20.02, t0 + 20.5),
                (t0 + 21.5, t0 + 22.0),
                (t0 + 23.0, t0 + 26.0),
            ],
            params={"temperature": 0.7, "note": f"called with {secret}"},
        ),
        ex(
            "illustration",
            "text_to_image",
            26.0,
            27.0,
            provider="stability",
            model="stable-diffusion-xl-1024-v1-0",
            status="fallback",
            branch="rewrite:censor",
            error_class="content_policy",
            error="stability refused the prompt (content_policy): rewrite it",
            inputs={"prompt": story_text},
            attempts=1,
            calls={"stability": 1},
        ),
        ex(
            "censor",
            "censor_text",
            27.0,
            28.0,
            provider="openai",
            model="gpt-4o-mini",
            inputs={"text": story_text},
            outputs={"text": "A fox walked by the river and sang."},
            attempts=1,
            calls={"openai": 1},
        ),
        ex(
            "illustration",
            "text_to_image",
            28.0,
            31.0,
            provider="stability",
            model="stable-diffusion-xl-1024-v1-0",
            iteration=2,
            inputs={"prompt": "A fox walked by the river and sang."},
            outputs={"image": image_out},
            attempts=1,
            calls={"stability": 1},
            params={"width": 256, "height": 256},
        ),
        ex(
            "frame",
            "frame",
            31.0,
            31.05,
            inputs={"text": story_text, "image": image_out},
            outputs={
                "frame": {
                    "text": story_text,
                    "image": image_out,
                    "narration": {"type": "audio", "path": "narration.wav", "mime": "audio/wav"},
                }
            },
        ),
    ]
    running = status == "running"
    if running:
        executions = executions[:5]
        executions[-1] = executions[-1].model_copy(update={"ended_at": None, "status": "running"})
    return Trace(
        flow="webcam_story",
        thread_id="thread-1234",
        started_at=t0,
        ended_at=None if running else t0 + 31.05,
        status="running" if running else "ok",
        inputs={"image": image_in, "theme": "a gentle adventure"},
        outputs={}
        if running
        else {"story": story_text, "image": image_out, "frame": {"text": story_text}},
        executions=executions,
        spec=sample_spec(),
        out_dir=str(out_dir),
    )
