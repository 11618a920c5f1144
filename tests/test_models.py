import torch
from torch import nn

from gif_bench.models import VGG, n_params


def test_vgg11_has_the_papers_parameter_count():
    model = VGG(width=1.0, in_channels=3, num_classes=10)
    assert n_params(model) == 9_231_114
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert bn == 5_504
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 512


def test_width_and_in_channels():
    model = VGG(width=0.25, in_channels=1, num_classes=7)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 1 and convs[0].out_channels == 16
    assert model.classifier.in_features == 128
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
