"""Networks of the benchmark, built from the ``model`` config group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .checks import Config, get, number
from .errors import ConfigError
from .registry import Registry, Validator, no_checks
from .settings import Model

# The paper's CIFAR VGG-11: numbers are 3×3 conv widths, "M" a 2×2 max-pool.
VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """CIFAR-style VGG: conv3×3 (bias) → BatchNorm → ReLU blocks, one Linear head.

    At ``width=1`` with 3×32×32 inputs and 10 classes this is the paper's VGG-11 with
    9,231,114 parameters. ``width`` multiplies every channel count (at least 1 channel).
    Inputs must be 32×32 (five 2×2 pools down to 1×1).
    """

    def __init__(self, layers=VGG11_LAYERS, width: float = 1.0, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = in_channels
        for item in layers:
            if item == "M":
                blocks.append(nn.MaxPool2d(2))
                continue
            c_out = max(1, round(item * width))
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class SmallCNN(nn.Module):
    """The paper's MNIST network: four 3×3 stride-2 convolutions (ReLU), then one Linear.

    Channels 32→64→128→256 at ``width=1`` (times ``width``, at least 1). With padding 1 a
    28×28 (or 32×32) input ends at 2×2, so the head is Linear(256·2·2 = 1024 → classes).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: float = 1.0,
        channels: tuple[int, ...] = (32, 64, 128, 256),
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for c in channels:
            c_out = max(1, round(c * width))
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in, size = c_out, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in * size * size, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    """Small fully connected net (flatten → Linear/ReLU … → Linear) for tests and toy runs."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (32,), num_classes: int = 10):
        super().__init__()
        dims = (in_features, *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def cifar_resnet18(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: a 3×3 stride-1 first convolution and no
    max-pool, so a 32×32 input reaches the last stage at 4×4 (He et al. 2016, §4.2; the
    usual CIFAR ResNet-18 of the unlearning literature).

    ``width`` multiplies the four stages' channel counts (64, 128, 256, 512; at least 1
    each); at ``width=1`` with 3 input channels and 10 classes it has 11,173,962 parameters.
    The blocks are torchvision's own ``BasicBlock``s, initialised as torchvision does.
    """
    from torchvision.models.resnet import BasicBlock, ResNet  # imported on use: torchvision is slow to load

    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    c = [max(1, round(w * width)) for w in (64, 128, 256, 512)]
    model.inplanes = c[0]
    model.conv1 = nn.Conv2d(in_channels, c[0], kernel_size=3, stride=1, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(c[0])
    model.maxpool = nn.Identity()
    model.layer1 = model._make_layer(BasicBlock, c[0], 2)
    model.layer2 = model._make_layer(BasicBlock, c[1], 2, stride=2)
    model.layer3 = model._make_layer(BasicBlock, c[2], 2, stride=2)
    model.layer4 = model._make_layer(BasicBlock, c[3], 2, stride=2)
    model.fc = nn.Linear(c[3], num_classes)
    for m in model.modules():  # torchvision's initialisation, for the replaced layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _width(cfg: Config) -> None:
    number(cfg, "model.width", 0.0, lo_open=True)


def _vgg11(cfg: Config) -> None:
    _width(cfg)
    if get(cfg, "dataset.image_size") != 32:
        raise ConfigError(f"dataset.image_size={get(cfg, 'dataset.image_size')}", "model=vgg11 needs 32")


@dataclass(frozen=True)
class ModelSpec:
    """A network: ``build(model, in_channels, num_classes, image_size)`` (its
    :class:`~gif_bench.settings.Model`) returns the module."""

    name: str
    build: Callable[[Model, int, int, int], nn.Module]
    validate: Validator = no_checks


MODELS: Registry[ModelSpec] = Registry("model")
for _spec in (
    ModelSpec(
        "vgg11", lambda m, c, k, s: VGG(VGG11_LAYERS, width=float(m.width), in_channels=c, num_classes=k), _vgg11
    ),
    ModelSpec("small_cnn", lambda m, c, k, s: SmallCNN(c, k, s, width=float(m.width)), _width),
    ModelSpec("resnet18", lambda m, c, k, s: cifar_resnet18(c, k, width=float(m.width)), _width),
    ModelSpec("mlp", lambda m, c, k, s: MLP(c * s**2, tuple(m.hidden), k)),
):
    MODELS.register(_spec)


def build(model: Model, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Instantiate ``model.name`` for the dataset's channels, classes and image size."""
    if model.name not in MODELS:
        raise ValueError(f"model={model.name} is not one of {', '.join(MODELS)}")
    return MODELS[model.name].build(model, in_channels, num_classes, image_size)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
