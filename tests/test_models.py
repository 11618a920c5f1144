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


def test_small_cnn_is_the_papers_mnist_network():
    from gif_bench.models import SmallCNN

    model = SmallCNN(in_channels=1, num_classes=10, image_size=28)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256] and all(c.stride == (2, 2) for c in convs)
    assert model.classifier.in_features == 1024 and len(list(model.modules())) == 11  # 4 conv + 4 ReLU + head
    assert n_params(model) == 320 + 18_496 + 73_856 + 295_168 + 10_250
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert SmallCNN(in_channels=1, image_size=32)(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert SmallCNN(in_channels=3, image_size=32, width=0.25).classifier.in_features == 64 * 4
