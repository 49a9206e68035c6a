"""Node kinds: typed graph nodes wrapping the provider engines.

Each kind is a class with typed input/output ports and ``async run(ctx, **inputs)``; the
provider is chosen by its model config. Kinds register by name for YAML flows.
"""

from calliope_graph.nodes._base import (
    Node,
    NoParams,
    Port,
    PortType,
    get_node_kind,
    node_kinds,
    register_node,
)
from calliope_graph.nodes._params_doc import ParamDoc, param_docs, params_schema, shown
from calliope_graph.nodes.analyze_image import AnalyzeImage
from calliope_graph.nodes.assemble_video import AssembleVideo
from calliope_graph.nodes.audio_to_text import AudioToText
from calliope_graph.nodes.basic import Constant, Frame, Passthrough, StoryFrame
from calliope_graph.nodes.censor_text import CensorText
from calliope_graph.nodes.choose import Choose
from calliope_graph.nodes.image_and_text_to_video import ImageAndTextToVideo
from calliope_graph.nodes.merge_analyses import MergeAnalyses
from calliope_graph.nodes.messages_to_object import MessagesToObject
from calliope_graph.nodes.prompt_template import PromptTemplate
from calliope_graph.nodes.switch import Classify, Switch
from calliope_graph.nodes.text_to_image import TextToImage
from calliope_graph.nodes.text_to_speech import TextToSpeech
from calliope_graph.nodes.text_to_text import TextToText

__all__ = [
    "AnalyzeImage",
    "AssembleVideo",
    "AudioToText",
    "CensorText",
    "Choose",
    "Classify",
    "Constant",
    "Frame",
    "ImageAndTextToVideo",
    "MergeAnalyses",
    "MessagesToObject",
    "NoParams",
    "Node",
    "ParamDoc",
    "Passthrough",
    "Port",
    "PortType",
    "PromptTemplate",
    "StoryFrame",
    "Switch",
    "TextToImage",
    "TextToSpeech",
    "TextToText",
    "get_node_kind",
    "node_kinds",
    "param_docs",
    "params_schema",
    "register_node",
    "shown",
]
