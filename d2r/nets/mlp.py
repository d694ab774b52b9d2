"""The one MLP builder of the networks: Linear layers with ReLU between them."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(widths: Sequence[int], *, activate_last: bool) -> nn.Sequential:
    """Linear layers widths[0] -> widths[1] -> ... -> widths[-1] with a ReLU between two layers,
    and after the last one too when `activate_last` (a trunk that feeds further layers).

    The layers sit at the even indices of the Sequential (0, 2, ...): parameter names
    `<name>.0.weight`, `<name>.2.weight`, ... whichever way the last layer goes.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    if activate_last and layers:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)
