"""Multi-task networks behind one interface (d2r.nets.base.MultiTaskNet), built by name."""

from __future__ import annotations

from d2r.nets.base import MultiTaskNet
from d2r.nets.baselines import MixtureOfExpertsNet, MTSACNet, MultiHeadNet, SoftModularNet, parameter_count
from d2r.nets.d2r_net import D2RNet

__all__ = ["NETS", "MultiTaskNet", "build_net", "parameter_count"]

#: The network kinds by name, the one registration of a kind: a method's `net` in params.yaml, with
#: its sizes under `nets.<kind>` (the schema's entry there; tests/test_baselines.py checks they agree).
NETS: dict[str, type[MultiTaskNet]] = {
    "d2r": D2RNet,
    "mtsac": MTSACNet,
    "mhsac": MultiHeadNet,
    "moe": MixtureOfExpertsNet,
    "softmod": SoftModularNet,
}


def build_net(kind: str, in_dim: int, out_dim: int, num_tasks: int, **net_args) -> MultiTaskNet:
    """A network of the given kind (a key of NETS) with its sizes."""
    if kind not in NETS:
        raise ValueError(f"unknown network kind {kind!r} (known: {', '.join(NETS)})")
    return NETS[kind](in_dim, out_dim, num_tasks, **net_args)
