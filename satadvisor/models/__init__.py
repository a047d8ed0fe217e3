"""Built-in model families and presets, usable by name (``satadvisor analyze vgg``).

Families (every knob searchable): ``vgg``, ``resnet``, ``plain``. Presets matching the
published networks: ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``, ``resnet18`` (ImageNet stem)
and ``resnet18_cifar`` (3x3 stride-1 stem, no max-pool)::

    from satadvisor.models import create_model, list_models, model_knobs
    net = create_model("vgg16", num_classes=10, in_channels=1)
    model_knobs("vgg")  # {'depth': 8, 'kernel_size': 3, 'width': 16, 'downsamplings': 3, ...}
    knob_roles("vgg").depth  # 'depth': what each knob does (see satadvisor.models.knobs)

A new family is a build function registered with a descriptor of its knobs::

    @register_model(knobs=KnobRoles(depth="blocks", width="channels", ...))
    def my_family(blocks: int = 4, channels: int = 16, *, num_classes=10, in_channels=3): ...
"""

from __future__ import annotations

from satadvisor.models._registry import (
    FamilyMember,
    create_model,
    family_member,
    get_model_fn,
    input_dims,
    knob_roles,
    list_models,
    model_knobs,
    register_model,
    unregister_model,
)
from satadvisor.models.knobs import CONVENTIONAL, KnobRoles, ReceptiveKnob

# Importing the family modules registers their models.
from satadvisor.models.plain import PlainCNN, PlainStage
from satadvisor.models.resnet import RESNET_BLOCKS, BasicBlock, ResNet, ResNetStage
from satadvisor.models.vgg import VGG, VGGStage

__all__ = [
    "CONVENTIONAL",
    "RESNET_BLOCKS",
    "VGG",
    "BasicBlock",
    "FamilyMember",
    "KnobRoles",
    "PlainCNN",
    "PlainStage",
    "ReceptiveKnob",
    "ResNet",
    "ResNetStage",
    "VGGStage",
    "create_model",
    "family_member",
    "get_model_fn",
    "input_dims",
    "knob_roles",
    "list_models",
    "model_knobs",
    "register_model",
    "unregister_model",
]
