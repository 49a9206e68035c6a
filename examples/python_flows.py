"""Every shipped flow (graphs/*.yaml), built in Python: each construct's Python spelling.

python examples/python_flows.py            # check each twin against its YAML
python examples/python_flows.py storyboard # ... and print that flow as YAML

The constructs, and where each is shown:

- inputs (typed, optional, defaults), outputs, descriptions — every flow
- node options: ``timeout``, ``retry`` (webcam_story), ``params`` (continuous_story)
- a list of sources into a ``many`` port (webcam_story's merge; webcam_branch's scene)
- ``fallback`` / ``continue_on`` / ``rewrite`` routes with ``when`` and ``label``
  (illustrate, webcam_story, continuous_story)
- ``subflow`` (illustrate_scene, narrate_scene), ``map`` over an object's field with a named
  ``item`` (storyboard, narrated_storyboard), ``switch`` (webcam_branch, narrate_scene)
- typed objects: an inline JSON Schema (storyboard) and a pydantic class (structured_scene)
- ``candidates=N`` and a ``choose`` node judged by a vision model, a consistency port
  (``reference_images``) fed from outside a map (consistent_storyboard, consistent_scene)

``tests/test_builder_parity.py`` asserts each twin equals its YAML spec (a new YAML without
a twin here fails it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from calliope_graph.flow import Flow
from calliope_graph.graphs.scene import Scene
from calliope_graph.nodes import (
    AnalyzeImage,
    AssembleVideo,
    AudioToText,
    CensorText,
    Choose,
    Frame,
    ImageAndTextToVideo,
    MergeAnalyses,
    MessagesToObject,
    Passthrough,
    PromptTemplate,
    TextToImage,
    TextToSpeech,
    TextToText,
)

LUNA = "openai-gpt-6-luna"


def illustrate() -> Flow:
    flow = Flow(
        "illustrate", "Text → image, with censor-and-retry up to 3 times and a provider fallback."
    )
    text = flow.input("text", "text", description="what to draw")
    image = flow.add(
        "image", TextToImage("stability-core", output_name="image.png"), {"prompt": text}
    )
    flow.rewrite(
        image,
        via="censor",
        port="prompt",
        when=["content_policy"],
        max_attempts=3,
        label="refused → censor, retry",
    )
    flow.fallback(image, to="fallback_image", when=["any"], label="Stability fails → OpenAI")
    flow.add("censor", CensorText(LUNA))
    flow.add(
        "fallback_image",
        TextToImage("openai-gpt-image-2", output_name="image.png"),
        {"prompt": text},
    )
    flow.output("image", image["image"])
    return flow


def continuous_story() -> Flow:
    flow = Flow(
        "continuous_story",
        "Previous text + situation → continuation; an empty continuation is retried once with a "
        "seed prompt, then the situation text itself stands in → illustration.",
    )
    previous = flow.input(
        "previous_text", "text", required=False, default="", description="the story so far"
    )
    situation = flow.input("situation", "text", description="what is happening now")
    template = "{previous_text}\nNow: {situation}\nContinue the story in two sentences."
    prompt = flow.add(
        "continuation_prompt",
        PromptTemplate(template=template, defaults={"previous_text": ""}),
        {"previous_text": previous, "situation": situation},
    )
    continuation = flow.add(
        "continuation", TextToText(LUNA), {"text": prompt.text}, params={"empty_is_error": True}
    )
    flow.rewrite(
        continuation,
        via="seed_prompt",
        port="text",
        when=["empty"],
        max_attempts=1,
        label="empty → retry with a seed prompt",
    )
    flow.fallback(
        continuation, to="situation_text", when=["empty"], label="still empty → use the situation"
    )
    seed = "Once upon a time, {situation}\nTell what happened next, in two sentences."
    flow.add(
        "seed_prompt",
        PromptTemplate(template=seed),
        {"situation": situation},
        description="Calliope's seed prompt, used when the model had nothing to add",
    )
    flow.add("situation_text", PromptTemplate(template="{situation}"), {"situation": situation})
    picture = flow.add(
        "illustration",
        TextToImage("openai-gpt-image-2", output_name="illustration.png"),
        {"prompt": continuation.text},
    )
    frame = flow.add("frame", Frame(), {"text": continuation.text, "image": picture.image})
    flow.output("text", continuation.text)
    flow.output("image", picture.image)
    flow.output("frame", frame.frame)
    return flow


def illustrate_scene() -> Flow:
    flow = Flow(
        "illustrate_scene",
        "Scene text + image prompt → illustration (illustrate subflow) → story frame.",
    )
    text = flow.input("text", "text", description="the scene's text")
    prompt = flow.input("image_prompt", "text", description="what its picture shows")
    # A shipped flow by name (or a .yaml path, or Flow.load(...)) runs as one node.
    picture = flow.subflow("illustration", "illustrate", {"text": prompt})
    frame = flow.add("frame", Frame(), {"text": text, "image": picture.image})
    flow.output("image", picture.image)
    flow.output("frame", frame.frame)
    return flow


def consistent_scene() -> Flow:
    flow = Flow(
        "consistent_scene",
        "Scene text + image prompt + character sheet → illustration drawn from the sheet → "
        "story frame.",
    )
    text = flow.input("text", "text", description="the scene's text")
    image_prompt = flow.input("image_prompt", "text", description="what its picture shows")
    sheet = flow.input(
        "sheet", "image", description="the character sheet every scene draws its characters from"
    )
    template = (
        "{image_prompt}\n"
        "Draw the characters exactly as they look on the character sheet given as reference:\n"
        "the same face, hair, clothes and colours. Storybook style, warm light."
    )
    prompt = flow.add(
        "illustration_prompt", PromptTemplate(template=template), {"image_prompt": image_prompt}
    )
    # reference_images: a consistency port; the model's catalog entry must take it
    drawn = {"prompt": prompt.text, "reference_images": sheet}
    picture = flow.add(
        "illustration", TextToImage("google-gemini-image", output_name="scene.png"), drawn
    )
    flow.fallback(
        picture, to="fallback_illustration", when=["any"], label="Gemini fails → OpenAI image edits"
    )
    flow.add(
        "fallback_illustration", TextToImage("openai-gpt-image-2", output_name="scene.png"), drawn
    )
    frame = flow.add("frame", Frame(), {"text": text, "image": picture.image})
    flow.output("image", picture.image)
    flow.output("frame", frame.frame)
    return flow


def image_to_video_story() -> Flow:
    flow = Flow(
        "image_to_video_story",
        "Image + story text → video (Runway), with the story softened if it is refused.",
    )
    image = flow.input("image", "image", description="the first frame of the clip")
    text = flow.input("text", "text", description="what happens in the clip")
    video = flow.add(
        "video",
        ImageAndTextToVideo("runway-gen4-turbo", output_name="clip.mp4"),
        {"image": image, "text": text},
    )
    flow.rewrite(
        video,
        via="censor",
        port="text",
        when=["content_policy"],
        max_attempts=2,
        label="refused → censor, retry",
    )
    flow.add("censor", CensorText(LUNA))
    frame = flow.add("frame", Frame(), {"text": text, "video": video.video})
    flow.output("video", video.video)
    flow.output("frame", frame.frame)
    return flow


def narrate_scene() -> Flow:
    flow = Flow(
        "narrate_scene",
        "Scene → illustration ∥ narration (OpenAI → ElevenLabs) → a clip when it moves.",
    )
    text = flow.input("text", "text", description="what the narrator says")
    prompt = flow.input("image_prompt", "text", description="what the scene's picture shows")
    motion = flow.input(
        "motion",
        "any",
        required=False,
        default=False,
        description="true when the scene should move (a clip instead of a still)",
    )
    picture = flow.subflow("illustration", "illustrate", {"text": prompt})
    narration = flow.add(
        "narration",
        TextToSpeech("elevenlabs-multilingual-v2", output_name="narration.wav"),
        {"text": text},
    )
    flow.fallback(
        narration, to="narration_backup", when=["any"], label="Multilingual v2 fails → Flash v2.5"
    )
    flow.add(
        "narration_backup",
        TextToSpeech("elevenlabs-flash-v2.5", output_name="narration.mp3"),
        {"text": text},
    )
    # A switch: the first JMESPath condition that holds chooses its node, else the default.
    flow.switch(
        "moves",
        motion,
        cases={"@ == `true`": "clip"},
        default="still",
        description="does the scene ask for motion?",
    )
    clip = flow.add(
        "clip",
        ImageAndTextToVideo("runway-gen4-turbo", output_name="clip.mp4"),
        {"image": picture.image, "text": prompt},
    )
    flow.add(
        "still",
        Passthrough(),
        {"value": picture.image},
        description="the picture stays a still",
    )
    flow.output("image", picture.image)
    flow.output("narration", narration.audio)
    flow.output("clip", clip.video)
    flow.output("caption", text)
    return flow


def _story_schema(
    max_scenes: int, scene: dict[str, Any], required: list[str], **more: dict[str, Any]
) -> dict[str, Any]:
    """The inline JSON Schema of a Story: a title, ``more`` fields (required) and its scenes."""
    return {
        "title": "Story",
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "the story's title"},
            **more,
            "scenes": {
                "type": "array",
                "description": "the scenes, in order",
                "minItems": 1,
                "maxItems": max_scenes,
                "items": {"type": "object", "properties": scene, "required": required},
            },
        },
        "required": ["title", *more, "scenes"],
    }


def storyboard() -> Flow:
    flow = Flow(
        "storyboard",
        "Premise → Story object (title, scenes) → map over scenes (illustrate_scene) → frames.",
    )
    premise = flow.input("premise", "text", description="what the story is about")
    template = (
        "Write a short illustrated story about {premise}: a title and three to five scenes,\n"
        "each with its text (two sentences) and a prompt for its illustration."
    )
    prompt = flow.add("prompt", PromptTemplate(template=template), {"premise": premise})
    fields = {
        "text": {"type": "string", "description": "what happens, in two sentences"},
        "image_prompt": {"type": "string", "description": "what the scene's picture shows"},
    }
    schema = _story_schema(8, fields, ["text", "image_prompt"])
    story = flow.add("story", MessagesToObject(LUNA, schema=schema), {"messages": prompt.text})
    # A map: the subflow runs once per scene, four at a time; its outputs become lists.
    scene = flow.item("scene")
    scenes = flow.map(
        "scenes",
        Flow.load("illustrate_scene"),
        {"text": scene.text, "image_prompt": scene.image_prompt},
        over=story["object", "scenes"],
        item=scene,
        max_parallel=4,
    )
    flow.output("title", story["object", "title"])
    flow.output("frames", scenes.frame)
    flow.output("images", scenes.image)
    return flow


def narrated_storyboard() -> Flow:
    flow = Flow(
        "narrated_storyboard",
        "Premise → Story → map over scenes (picture ∥ narration, clip if it moves) → story.mp4.",
    )
    premise = flow.input("premise", "text", description="what the story is about")
    template = (
        "Write a short story about {premise} to be narrated over pictures: a title and three\n"
        "to five scenes, each with what the narrator says (two sentences), a prompt for its\n"
        "picture, and whether the scene moves."
    )
    prompt = flow.add("prompt", PromptTemplate(template=template), {"premise": premise})
    fields = {
        "text": {"type": "string", "description": "what the narrator says"},
        "image_prompt": {"type": "string", "description": "what the scene's picture shows"},
        "motion": {"type": "boolean", "description": "true when the scene should move"},
    }
    schema = _story_schema(6, fields, ["text", "image_prompt", "motion"])
    story = flow.add("story", MessagesToObject(LUNA, schema=schema), {"messages": prompt.text})
    scene = flow.item("scene")
    scenes = flow.map(
        "scenes",
        "flow",  # the generic spelling of a subflow: kind "flow" and its params
        {"text": scene.text, "image_prompt": scene.image_prompt, "motion": scene.motion},
        over=story["object", "scenes"],
        item=scene,
        max_parallel=4,
        params={"flow": "narrate_scene"},
    )
    video = flow.add(
        "video",
        AssembleVideo(output_name="story.mp4", width=640, height=360, fps=12, crossfade=0.3),
        {
            "images": scenes.image,
            "clips": scenes.clip,
            "narrations": scenes.narration,
            "captions": scenes.caption,
        },
    )
    flow.output("title", story["object", "title"])
    flow.output("video", video.video)
    flow.output("narrations", scenes.narration)
    return flow


def consistent_storyboard() -> Flow:
    flow = Flow(
        "consistent_storyboard",
        "Premise → Story (hero, scenes) → 3 character sheets, a judge keeps one → map over "
        "scenes (drawn from the sheet) → frames.",
    )
    premise = flow.input("premise", "text", description="what the story is about")
    template = (
        "Write a short illustrated story about {premise}: a title, how its hero looks (one\n"
        "sentence: face, hair, clothes, colours) and three to five scenes, each with its text\n"
        "(two sentences) and a prompt for its illustration."
    )
    prompt = flow.add("prompt", PromptTemplate(template=template), {"premise": premise})
    fields = {
        "text": {"type": "string", "description": "what happens, in two sentences"},
        "image_prompt": {"type": "string", "description": "what the scene's picture shows"},
    }
    hero = {"type": "string", "description": "how the hero looks, in one sentence"}
    schema = _story_schema(8, fields, ["text", "image_prompt"], hero=hero)
    story = flow.add("story", MessagesToObject(LUNA, schema=schema), {"messages": prompt.text})
    template = (
        "A character sheet of {hero}: the same figure from the front, the side and the back,\n"
        "full length, on a plain white background. Storybook style, clean lines."
    )
    sheet_prompt = flow.add(
        "sheet_prompt", PromptTemplate(template=template), {"hero": story["object", "hero"]}
    )
    # candidates: three sheets drawn at once (distinct seeds); the port becomes a list of 3
    sheet = flow.add(
        "sheet",
        TextToImage("google-gemini-image", output_name="sheet.png"),
        {"prompt": sheet_prompt.text},
        candidates=3,
    )
    criteria = (
        "One whole figure shown from the front, the side and the back, the same character in "
        "every view, on a plain background, with no text and nothing cut off."
    )
    # a judge: a vision chat model scores each picture against the criteria; the best wins
    pick = flow.add(
        "pick_sheet", Choose(LUNA, by="judge", criteria=criteria), {"candidates": sheet.image}
    )
    scene = flow.item("scene")
    scenes = flow.map(
        "scenes",
        Flow.load("consistent_scene"),
        {"text": scene.text, "image_prompt": scene.image_prompt, "sheet": pick.item},
        over=story["object", "scenes"],
        item=scene,
        max_parallel=4,
    )
    flow.output("title", story["object", "title"])
    flow.output("sheet", pick.item)
    flow.output("sheet_scores", pick.scores)
    flow.output("frames", scenes.frame)
    flow.output("images", scenes.image)
    return flow


def structured_scene() -> Flow:
    flow = Flow(
        "structured_scene", "Messages → Scene object (structured output) → image prompt → image."
    )
    messages = flow.input(
        "messages",
        "messages",
        description="the conversation so far (a string becomes one user message)",
    )
    scene = flow.add("scene", MessagesToObject(LUNA, response_model=Scene), {"messages": messages})
    template = (
        "An illustration of {{scene.setting}}. {{#scene.characters}}{{name}}, {{description}}. "
        "{{/scene.characters}}The mood is {{scene.mood}}. Painterly, warm light, storybook style."
    )
    prompt = flow.add(
        "image_prompt",
        PromptTemplate(template_format="mustache", template=template),
        {"scene": scene.object},
    )
    image = flow.add(
        "image", TextToImage("openai-gpt-image-2", output_name="scene.png"), {"prompt": prompt.text}
    )
    flow.rewrite(image, via="censor", port="prompt", when=["content_policy"], max_attempts=2)
    flow.add("censor", CensorText(LUNA))
    flow.output("scene", scene.object)
    flow.output("prompt", prompt.text)
    flow.output("image", image.image)
    return flow


def voice_story() -> Flow:
    flow = Flow(
        "voice_story",
        "Audio → transcription → story → illustration (censor-and-retry, provider fallback).",
    )
    audio = flow.input(
        "audio",
        "audio",
        description="a recording (WAV or MP3) of someone telling what happens next",
    )
    flow.input(
        "language",
        "text",
        required=False,
        default="en",
        description="the spoken language (ISO-639-1)",
    )
    said = flow.add("transcription", AudioToText("openai-gpt-transcribe"), {"audio": audio})
    template = (
        'A listener just said: "{said}"\n'
        "Turn it into the next frame of an illustrated story, in two or three vivid sentences."
    )
    prompt = flow.add("story_prompt", PromptTemplate(template=template), {"said": said.text})
    story = flow.add("story", TextToText(LUNA), {"text": prompt.text})
    picture = flow.add(
        "illustration",
        TextToImage("stability-core", output_name="illustration.png"),
        {"prompt": story.text},
    )
    flow.rewrite(picture, via="censor", port="prompt", when=["content_policy"], max_attempts=3)
    flow.fallback(picture, to="openai_illustration", when=["any"])
    flow.add("censor", CensorText(LUNA))
    flow.add(
        "openai_illustration",
        TextToImage("openai-gpt-image-2", output_name="illustration.png"),
        {"prompt": story.text},
    )
    frame = flow.add("frame", Frame(), {"text": story.text, "image": picture.image})
    flow.output("transcript", said.text)
    flow.output("story", story.text)
    flow.output("image", picture.image)
    flow.output("frame", frame.frame)
    return flow


def webcam_branch() -> Flow:
    flow = Flow(
        "webcam_branch",
        "Webcam image → analysis → switch (a person → character scene, else landscape) → "
        "illustration.",
    )
    image = flow.input("image", "image", description="a webcam frame (JPEG or PNG)")
    analysis = flow.add("analysis", AnalyzeImage(LUNA), {"image": image})
    # A switch names its branches before they are added (or pass their handles).
    seen = flow.switch(
        "seen",
        analysis.analysis,
        cases={"contains(tags, 'person') || contains(objects, 'person')": "character_prompt"},
        default="landscape_prompt",
        description="a person in the picture?",
    )
    character = flow.add(
        "character_prompt",
        PromptTemplate(
            template="Write a two-sentence scene about the person in this picture, as a story "
            "character: {analysis}"
        ),
        {"analysis": analysis.analysis},
    )
    landscape = flow.add(
        "landscape_prompt",
        PromptTemplate(
            template="Write a two-sentence scene set in this place, with no people in it: "
            "{analysis}"
        ),
        {"analysis": analysis.analysis},
    )
    # Whichever branch ran feeds the scene: a list of sources into a one-value port.
    scene = flow.add("scene", TextToText(LUNA), {"text": [character.text, landscape.text]})
    picture = flow.add(
        "illustration",
        TextToImage("openai-gpt-image-2", output_name="illustration.png"),
        {"prompt": scene.text},
    )
    flow.output("scene", scene.text)
    flow.output("branch", seen.branch)
    flow.output("image", picture.image)
    return flow


def webcam_story() -> Flow:
    flow = Flow(
        "webcam_story",
        "Webcam image → (Azure analysis ∥ LLM vision analysis) → merge → story continuation → "
        "illustration (censor-and-retry, Stability falling back to OpenAI) → story frame.",
    )
    image = flow.input("image", "image", description="a webcam frame (JPEG or PNG)")
    so_far = flow.input(
        "story_so_far",
        "text",
        required=False,
        default="",
        description="the story told so far (empty for a new story)",
    )
    azure = flow.add(
        "azure_analysis",
        AnalyzeImage("azure-vision-4.0"),
        {"image": image},
        description="captions, tags, objects and text from Azure AI Vision",
    )
    flow.continue_on(azure, when=["any"], label="fails → continue with the LLM alone")
    llm = flow.add(
        "llm_analysis",
        AnalyzeImage(LUNA),
        {"image": image},
        timeout=30,
        description="a multimodal LLM describes the scene (bounded by a timeout, as in the seed)",
    )
    flow.continue_on(
        llm,
        when=["timeout", "transient", "rate_limit"],
        label="timeout → continue with Azure alone",
    )
    merge = flow.add("merge", MergeAnalyses(), {"analyses": [azure.analysis, llm.analysis]})
    template = (
        "You are telling an illustrated story, one short frame at a time.\n"
        "The story so far: {story_so_far}\n"
        "The camera now sees: {analysis}\n"
        "Write the next frame of the story in two or three vivid sentences."
    )
    prompt = flow.add(
        "story_prompt",
        PromptTemplate(template=template, defaults={"story_so_far": ""}),
        {"analysis": merge.analysis, "story_so_far": so_far},
    )
    story = flow.add(
        "story",
        TextToText(LUNA, empty_is_error=True),
        {"text": prompt.text},
        retry={"max_attempts": 2, "when": ["transient", "rate_limit", "empty"]},
    )
    picture = flow.add(
        "illustration",
        TextToImage("stability-core", width=1024, height=1024, output_name="illustration.png"),
        {"prompt": story.text},
    )
    flow.rewrite(
        picture,
        via="censor",
        port="prompt",
        when=["content_policy"],
        max_attempts=3,
        label="content policy → censor, retry",
    )
    flow.fallback(picture, to="openai_illustration", label="Stability fails → OpenAI")
    flow.add(
        "censor",
        CensorText(LUNA),
        description="the seed's copy editor softens a refused prompt",
    )
    flow.add(
        "openai_illustration",
        TextToImage("openai-gpt-image-2", width=1024, height=1024, output_name="illustration.png"),
        {"prompt": story.text},
    )
    frame = flow.add("frame", Frame(), {"text": story.text, "image": picture.image})
    flow.output("frame", frame.frame)
    flow.output("story", story.text)
    flow.output("image", picture.image)
    flow.output("analysis", merge.analysis)
    return flow


#: Every shipped flow's Python twin, by name.
PYTHON_FLOWS: dict[str, Callable[[], Flow]] = {
    build.__name__: build
    for build in (
        consistent_scene,
        consistent_storyboard,
        continuous_story,
        illustrate,
        illustrate_scene,
        image_to_video_story,
        narrate_scene,
        narrated_storyboard,
        storyboard,
        structured_scene,
        voice_story,
        webcam_branch,
        webcam_story,
    )
}


def differences(python: Flow, yaml: Flow) -> list[str]:
    """Where two flows' specs differ (``[]``: the same flow), one line per differing part."""
    a, b = python.spec.model_dump(mode="json"), yaml.spec.model_dump(mode="json")
    out = [f"{key}: {a[key]!r} != {b[key]!r}" for key in a if key != "nodes" and a[key] != b[key]]
    for name in sorted(set(a["nodes"]) | set(b["nodes"])):
        node_a, node_b = a["nodes"].get(name), b["nodes"].get(name)
        if node_a != node_b:
            out.append(f"nodes.{name}: Python {node_a!r} != YAML {node_b!r}")
    if list(a["nodes"]) != list(b["nodes"]):
        out.append(f"node order: {list(a['nodes'])} != {list(b['nodes'])}")
    return out


def main(names: list[str]) -> int:
    failed = 0
    for name, build in PYTHON_FLOWS.items():
        problems = differences(build().validate(), Flow.load(name))
        failed += bool(problems)
        print(f"{name}: {'the same as' if not problems else 'DIFFERS from'} graphs/{name}.yaml")
        for line in problems:
            print("  ", line)
    for name in names:
        print(PYTHON_FLOWS[name]().to_yaml())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
