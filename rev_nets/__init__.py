"""rev_nets: ReLU nets run backwards with transposed weights (Arora, Liang & Ma, 2015)."""

from rev_nets import generator, layers, nets

__version__ = "0.1.0"
__all__ = ["generator", "layers", "nets"]
