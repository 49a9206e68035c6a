"""Scene: the typed object the ``structured_scene`` flow asks a chat model to fill.

It lives beside its flow (``structured_scene.yaml`` names it as ``response_model``); the
checkpoint serializer allows it because that node names it, like any user's model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Character", "Scene"]


class Character(BaseModel):
    """Someone in the scene."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="what the story calls them")
    description: str = Field(description="how they look and what they are doing, in a phrase")


class Scene(BaseModel):
    """One scene of a story, structured so an image prompt can be built from it."""

    model_config = ConfigDict(extra="forbid")

    characters: list[Character] = Field(description="who is in the scene")
    setting: str = Field(description="where and when the scene takes place")
    mood: str = Field(description="the feeling of the scene in a few words")
