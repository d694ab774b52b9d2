"""Initial weights of every network kind under `nets.init` (spec section 4, "Details of the release
worth matching"): `release` gives hidden layers U(+-1/sqrt(out_features)) with biases 0.1 and the
last layer U(+-3e-3); `torch` keeps PyTorch's default."""

import pytest
import torch
from torch import nn

from d2r.nets import NETS, build_net

STATE, ACTION, TASKS = 39, 4, 10

# Per kind: the parameters initialised as a last layer, and the stacked weights that stand for
# Linear layers of a given number of outputs (name -> out_features); the rest are nn.Linear.
LAST = {
    "d2r": {"head.weight", "head.bias"},
    "mtsac": {"net.6.weight", "net.6.bias"},
    "mhsac": {"head_weight", "head_bias"},
    "moe": {"weights.2", "biases.2"},
    "softmod": {"route_out.0.weight", "route_out.0.bias", "route_out.1.weight", "route_out.1.bias",
                "route_out.2.weight", "route_out.2.bias", "out_gate.weight", "out_gate.bias",
                "head.weight", "head.bias"},
}
STACKED_OUT = {
    "moe": {"weights.0": 400, "weights.1": 400},
    "softmod": {"layer0.weight": 128, "module_weight.0": 128, "module_weight.1": 128, "module_weight.2": 128},
}


def hidden_bound(net: nn.Module, kind: str, name: str) -> float:
    out = STACKED_OUT.get(kind, {}).get(name)
    if out is None:
        out = net.get_submodule(name.rsplit(".", 1)[0]).out_features
    return out**-0.5


@pytest.mark.parametrize("kind", list(NETS))
@pytest.mark.parametrize("dims", [(STATE, 2 * ACTION), (STATE + ACTION, 1)], ids=["policy", "Q"])
def test_release_initialisation_of_every_kind(kind, dims):
    if kind not in LAST:
        pytest.skip(f"the last layers of network kind {kind!r} are not listed in LAST")
    torch.manual_seed(0)
    net = build_net(kind, *dims, TASKS, init="release")
    names = {name for name, _ in net.named_parameters()}
    assert LAST[kind] <= names
    for name, p in net.named_parameters():
        value = p.detach().abs()
        if name in LAST[kind]:
            assert value.max() <= 3e-3 and value.max() > 1e-3, name
        elif name.endswith("bias") or name.startswith("biases") or name.startswith("module_bias"):
            assert torch.all(p == 0.1), name
        else:
            bound = hidden_bound(net, kind, name)
            assert value.max() <= bound and value.max() > 0.8 * bound, (name, value.max().item(), bound)


@pytest.mark.parametrize("kind", list(NETS))
def test_torch_initialisation_keeps_pytorchs_default(kind):
    torch.manual_seed(0)
    net = build_net(kind, STATE, 2 * ACTION, TASKS, init="torch")
    for layer in net.modules():
        if isinstance(layer, nn.Linear):  # U(+-1/sqrt(in_features)) for weights and biases
            bound = layer.in_features**-0.5
            assert layer.weight.abs().max() <= bound and not torch.all(layer.bias == 0.1)
    assert max(p.abs().max() for p in net.parameters()) > 3e-3


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        build_net("d2r", STATE, 1, TASKS, init="xavier")
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        build_net("moe", STATE, 1, TASKS, init="xavier")
