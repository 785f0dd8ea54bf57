"""PyTorch references for ``benchmarks.throughput``: the same nets and the same train step, backprop or SHADOW.

Each builder returns ``(forward, generate, modules, input_shape)``: ``forward(x)``
gives the logits and what the generator needs from the pass; ``generate(record,
layer)`` runs source layer ``layer`` back to an input (ReLU, transposed maps
times the formula's alpha, max-unpooling at the forward's switches, BatchNorm
as its batch's per-channel scale), as ``rev_nets.generator`` does. Only the
step's time is compared, so the twins need not equal rev_nets' bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _alpha(weight: torch.Tensor, relu_before: bool) -> torch.Tensor:
    """The formula's alpha of a map: ``2 / (fan_in * mean(W^2))`` (1 in place of 2 with no ReLU before it)."""
    return (2.0 if relu_before else 1.0) / (weight[0].numel() * weight.pow(2).mean())


def mlp():
    """The default MNIST MLP: 784 -> 1024 x 3 -> 10."""
    layers = nn.ModuleList([nn.Linear(784, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 1024)])
    head = nn.Linear(1024, 10)

    def forward(x):
        h, record = x.flatten(1), []
        for layer in layers:
            h = F.relu(layer(h))
            record.append(h)
        return head(h), record

    def generate(record, layer):
        g = record[layer - 1]
        for index in range(layer - 1, -1, -1):
            w = layers[index].weight
            g = _alpha(w, index > 0) * g @ w
            g = F.relu(g) if index > 0 else g
        return g.reshape(-1, 1, 28, 28)

    return forward, generate, nn.ModuleList([layers, head]), (1, 28, 28)


def cnn(channels: tuple[int, ...]):
    """The CIFAR CNN: 3x3 convolutions of ``channels``, each then ReLU and a 2x2 max pool, and a linear head."""
    layers = nn.ModuleList([nn.Conv2d(a, b, 3, padding=1) for a, b in zip((3, *channels), channels)])
    side = 32 // 2 ** len(channels)
    head = nn.Linear(channels[-1] * side * side, 10)

    def forward(x):
        h, record = x, []
        for layer in layers:
            h, switches = F.max_pool2d(F.relu(layer(h)), 2, return_indices=True)
            record.append((h, switches))
        return head(h.flatten(1)), record

    def generate(record, layer):
        g = record[layer - 1][0]
        for index in range(layer - 1, -1, -1):
            w = layers[index].weight
            g = _alpha(w, index > 0) * F.conv_transpose2d(F.max_unpool2d(g, record[index][1], 2), w, padding=1)
            g = F.relu(g) if index > 0 else g
        return g

    return forward, generate, nn.ModuleList([layers, head]), (3, 32, 32)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    """airbench94's BatchNorm: a trained shift, no scale, eps 1e-12, running averages at momentum 0.6."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


def _batch_scale(pre_norm: torch.Tensor) -> torch.Tensor:
    """BatchNorm's per-channel scale at its batch's statistics, shaped to multiply an NCHW tensor."""
    variance = pre_norm.float().var(dim=(0, 2, 3), unbiased=False)
    return (variance + 1e-12).rsqrt()[None, :, None, None]


def airbench_relu(widths: tuple[int, ...]):
    """``rev_nets.nnx_zoo.airbench_relu``: the frozen 2x2 whitening convolution and ReLU, three groups of
    ``conv -> max pool -> BatchNorm -> ReLU -> conv -> BatchNorm -> ReLU`` (bias-free convolutions), a 3x3 max
    pool and a bias-free head times 1/9."""
    whitening = nn.Conv2d(3, 24, 2)
    whitening.weight.requires_grad_(False)
    convs, norms, c_in = nn.ModuleList(), nn.ModuleList(), 24
    for width in widths:
        convs.extend(
            [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.Conv2d(width, width, 3, padding=1, bias=False)]
        )
        norms.extend([_batch_norm(width), _batch_norm(width)])
        c_in = width
    head = nn.Linear(widths[-1], 10, bias=False)

    def forward(x):
        h, record = F.relu(whitening(x)), []
        for group in range(len(widths)):
            first, second = convs[2 * group], convs[2 * group + 1]
            a = first(h)
            pooled, switches = F.max_pool2d(a, 2, return_indices=True)
            b = second(F.relu(norms[2 * group](pooled)))
            h = F.relu(norms[2 * group + 1](b))
            record.append((h, pooled, switches, a.shape[-2:], b))
        return head(F.max_pool2d(h, 3).flatten(1)) / 9, record

    def generate(record, layer):
        g = record[layer - 1][0]
        for group in range(layer - 1, -1, -1):
            _, pooled, switches, size, b = record[group]
            first, second = convs[2 * group].weight, convs[2 * group + 1].weight
            g = F.relu(_alpha(second, True) * F.conv_transpose2d(g * _batch_scale(b), second, padding=1))
            g = F.max_unpool2d(g * _batch_scale(pooled), switches, 2, output_size=size)
            g = F.relu(_alpha(first, True) * F.conv_transpose2d(g, first, padding=1))
        return _alpha(whitening.weight, False) * F.conv_transpose2d(g, whitening.weight)

    return forward, generate, nn.ModuleList([whitening, convs, norms, head]), (3, 32, 32)


BUILDERS = {
    "mlp": lambda model: mlp(),
    "cnn": lambda model: cnn(tuple(layer.features for layer in model.layers)),
    "airbench": lambda model: airbench_relu(tuple(model.record.keywords["widths"])),
}


def train_step(
    builder: str, model, shadow_layer: int, batch: int, precision: str = "float32", label_smoothing: float = 0.0
):
    """One PyTorch train step (SGD, Nesterov momentum; SHADOW's loss the mean of the real and twin
    cross-entropies) of the twin of ``model`` on a fixed random batch, as a function of no arguments:
    ``precision`` "float32" (NCHW) or "bf16" (autocast, channels-last)."""
    torch.manual_seed(0)
    forward, generate, modules, shape = BUILDERS[builder](model)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    if precision == "bf16" and len(shape) == 3:
        modules, x = modules.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    trained = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=0.01, momentum=0.9, nesterov=True)
    loss_of = lambda logits: F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)

    def step():
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits, record = forward(x)
            loss = loss_of(logits)
            if shadow_layer:
                with torch.no_grad():
                    twins = generate(record, shadow_layer)
                loss = (loss + loss_of(forward(twins)[0])) / 2
        loss.backward()
        optimizer.step()

    return step
