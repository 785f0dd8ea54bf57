"""Plain-numpy reference implementations the tests compare against."""

import math

import numpy as np


def same_pads(size, kernel, stride):
    """TensorFlow-style SAME padding (before, after) for one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pads_for(padding, in_hw, kernel, strides):
    if padding == "SAME":
        return tuple(same_pads(s, k, st) for s, k, st in zip(in_hw, kernel, strides))
    if padding == "VALID":
        return ((0, 0), (0, 0))
    return padding


def conv(x, w, strides, pads):
    """NHWC x HWIO cross-correlation with explicit padding, by loops over outputs."""
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw, _, co = w.shape
    sh, sw = strides
    out_h = (xp.shape[1] - kh) // sh + 1
    out_w = (xp.shape[2] - kw) // sw + 1
    y = np.zeros((x.shape[0], out_h, out_w, co))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :]
            y[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, w)
    return y


def conv_transpose(y, w, in_hw, strides, pads):
    """The adjoint of ``conv``: scatter each output back over its receptive field."""
    (pt, pb), (pl, pr) = pads
    kh, kw, ci, _ = w.shape
    sh, sw = strides
    xp = np.zeros((y.shape[0], in_hw[0] + pt + pb, in_hw[1] + pl + pr, ci))
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            xp[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :] += np.einsum("bo,hwco->bhwc", y[:, i, j, :], w)
    return xp[:, pt : pt + in_hw[0], pl : pl + in_hw[1], :]


def max_pool(z, p):
    b, h, w, c = z.shape
    return z.reshape(b, h // p, p, w // p, p, c).max(axis=(2, 4))


def avg_pool(z, p):
    b, h, w, c = z.shape
    return z.reshape(b, h // p, p, w // p, p, c).mean(axis=(2, 4))


def max_unpool(h, z, p):
    """Each pooled value back at the position of its window's maximum in ``z``, zeros elsewhere."""
    b, hh, ww, c = h.shape
    windows = z.reshape(b, hh, p, ww, p, c).transpose(0, 1, 3, 5, 2, 4).reshape(b, hh, ww, c, p * p)
    spread = h[..., None] * (np.arange(p * p) == windows.argmax(-1)[..., None])
    return spread.reshape(b, hh, ww, c, p, p).transpose(0, 1, 4, 2, 5, 3).reshape(b, hh * p, ww * p, c)
