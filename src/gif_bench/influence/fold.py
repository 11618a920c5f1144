"""Evaluation-mode BatchNorm folded into the convolution before it: the same function, cheaper.

In eval mode ``BN(conv(x; W, b)) = conv(x; s·W, s·(b − μ) + β)`` with ``s = γ / √(σ² + ε)``
per output channel. Written that way the per-channel scale and shift act on the weights, not
on every activation, and every derivative of the loss (with respect to W, b, γ and β) goes
through weight-sized tensors — which is where Hessian-vector products spend much of their
elementwise work on a conv → BN network. Nothing is approximated: it is the same
composition with the multiplications reassociated.

:func:`fold_batchnorm` returns a copy of a model with every ``Conv → BatchNorm`` pair that
sits next to each other in an ``nn.Sequential`` folded; parameter and buffer names are
unchanged, so a parameter dict of the original works on the copy as is (and vice versa).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_PAIRS = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


class _FoldedBatchNorm(nn.Module):
    """Holds a folded BatchNorm's parameters and statistics (names unchanged); identity."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.eps = bn.eps

    def forward(self, x: Tensor) -> Tensor:
        return x

    def train(self, mode: bool = True) -> _FoldedBatchNorm:
        if mode:
            raise RuntimeError("a model with folded BatchNorm is for evaluation only")
        return super().train(False)


class FoldedConv(nn.Module):
    """A convolution followed by a folded BatchNorm: ``conv(x; s·W, s·(b − μ) + β)``.

    Its own ``weight``/``bias`` are the convolution's; the BatchNorm's live in the
    :class:`_FoldedBatchNorm` left in its old place, read (not owned) here.
    """

    def __init__(self, conv: nn.modules.conv._ConvNd, bn: _FoldedBatchNorm):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.conv_fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[conv.weight.dim() - 2]
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.padding_mode = conv.padding_mode
        self._bn = (bn,)  # a tuple, so that the BatchNorm's tensors keep their own names

    def unit_scale(self) -> Tensor:
        """``s = γ / √(σ² + ε)``: each output channel's factor after the convolution."""
        bn = self._bn[0]
        scale = torch.rsqrt(bn.running_var + bn.eps)
        return scale if bn.weight is None else bn.weight * scale

    def forward(self, x: Tensor) -> Tensor:
        bn = self._bn[0]
        scale = self.unit_scale()
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        bias = -bn.running_mean * scale if self.bias is None else (self.bias - bn.running_mean) * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        return self.conv_fn(
            x, self.weight * scale.reshape(shape), bias, self.stride, self.padding, self.dilation, self.groups
        )

    def train(self, mode: bool = True) -> FoldedConv:
        if mode:
            raise RuntimeError("a model with folded BatchNorm is for evaluation only")
        return super().train(False)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each adjacent ``Conv → BatchNorm`` folded.

    The copy shares no storage with ``model`` and computes the same function (up to float
    rounding); its ``named_parameters()``/``named_buffers()`` have the same names. Only
    pairs inside an ``nn.Sequential`` are folded, and only zero-padded convolutions with
    BatchNorm that tracks running statistics; anything else is copied unchanged. Calling
    ``.train()`` on a folded module raises.
    """
    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if not any(type(conv) is c and type(bn) is n for c, n in _PAIRS):
                continue
            if bn.running_var is None or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                continue
            kept = _FoldedBatchNorm(bn)
            seq._modules[b] = kept
            seq._modules[a] = FoldedConv(conv, kept)
    return folded
