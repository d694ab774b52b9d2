"""Weight initialisation schemes of the networks: `release` (the authors' code) or `torch`.

The D2R release (and the Soft-Module release it builds on) initialises
- every hidden layer ("basic_init"): weights uniform in +-1/sqrt(d) with d = the weight's first
  dimension, which for a torch Linear weight [out, in] is out_features (the release's fan-in
  helper reads size[0]); biases 0.1;
- the last layer of a network ("uniform_init"): weights and biases uniform in +-3e-3.
`torch` keeps PyTorch's default nn.Linear initialisation (U(+-1/sqrt(in_features))).

Stacked layers (several Linear layers kept as one tensor, e.g. the experts of the mixture of
experts) are initialised like the Linear layers they stand for.
"""

from __future__ import annotations

from torch import nn

INIT_SCHEMES = ("release", "torch")
HIDDEN_BIAS = 0.1
LAST_BOUND = 3e-3


def check_scheme(init: str) -> None:
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r} (known: {', '.join(INIT_SCHEMES)})")


def hidden_(weight, bias, out_features: int) -> None:
    """The release's hidden layer: weight U(+-1/sqrt(out_features)), bias 0.1 (in place)."""
    bound = out_features**-0.5
    weight.data.uniform_(-bound, bound)
    bias.data.fill_(HIDDEN_BIAS)


def last_(weight, bias) -> None:
    """The release's last layer: weight and bias U(+-3e-3) (in place)."""
    weight.data.uniform_(-LAST_BOUND, LAST_BOUND)
    bias.data.uniform_(-LAST_BOUND, LAST_BOUND)


def release_linears_(net: nn.Module, last: list[nn.Linear]) -> None:
    """Every nn.Linear of `net` as a hidden layer, except those in `last` (as last layers).

    In module order, so one seed gives one set of weights."""
    last_ids = {id(layer) for layer in last}
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            if id(layer) in last_ids:
                last_(layer.weight, layer.bias)
            else:
                hidden_(layer.weight, layer.bias, layer.out_features)
