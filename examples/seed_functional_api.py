"""The seed's functional API, unchanged call sites, against the simulator.

Calliope's strategies switch ``from calliope.inference import ...`` to
``from calliope_graph.inference import ...`` and keep working.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from calliope_graph import catalog
from calliope_graph.inference import (
    image_analysis_inference,
    text_to_image_file_inference,
    text_to_text_inference,
)
from calliope_graph.simulate import Simulator

HERE = Path(__file__).parent


async def main(out: Path) -> None:
    sim = Simulator()  # a real run would use KeysModel.from_env() and httpx.AsyncClient()
    keys = sim.keys()
    async with sim.client() as client:
        analysis = await image_analysis_inference(
            client, str(HERE / "media" / "webcam.jpg"), None, catalog.get("openai-gpt-6-luna"), keys
        )
        prompt = f"Continue the story. The camera sees: {analysis['description']}"
        story = await text_to_text_inference(client, prompt, catalog.get("openai-gpt-6-luna"), keys)
        image = await text_to_image_file_inference(
            client,
            story,
            str(out / "frame.png"),
            catalog.get("openai-gpt-image-2"),
            keys,
            1024,
            1024,
        )
    print(story)
    print(f"image: {image}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")))
