"""The README's Python builder example, run offline against the simulator.

python examples/builder_flow.py out/builder
"""

from __future__ import annotations

import sys
from pathlib import Path

from calliope_graph.flow import Flow
from calliope_graph.nodes import CensorText, TextToImage
from calliope_graph.simulate import Simulator, parse_faults


def build() -> Flow:
    flow = Flow("illustrate")
    text = flow.input("text", "text")
    image = flow.add("image", TextToImage("stability-core"), {"prompt": text})
    censor = flow.add("censor", CensorText("openai-gpt-6-luna"))
    fallback = flow.add("fallback_image", TextToImage("openai-gpt-image-2"), {"prompt": text})
    flow.rewrite(image, via=censor, port="prompt", when=["content_policy"], max_attempts=3)
    flow.fallback(image, to=fallback, when=["any"])
    flow.output("image", image["image"])
    return flow


def main(out: Path) -> None:
    flow = build()
    print(flow.draw("mermaid"))
    # Stability refuses the first prompt: the censor rewrites it and the image is drawn.
    sim = Simulator(faults=parse_faults("content_policy@stability:first_n=1"))
    result = flow.invoke({"text": "a lighthouse at dawn"}, out_dir=out, simulator=sim)
    print("image:", result.outputs["image"].path)
    print("path taken:", " → ".join(result.trace.path()))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out/builder"))
