"""Multi-task networks behind one interface (d2r.nets.base.MultiTaskNet), built by name."""

from __future__ import annotations

from d2r.nets.base import MultiTaskNet
from d2r.nets.baselines import parameter_count

__all__ = ["MultiTaskNet", "build_net", "parameter_count"]


def build_net(kind: str, in_dim: int, out_dim: int, num_tasks: int, **net_args) -> MultiTaskNet:
    """A network of the given kind (`d2r`, `mtsac`, `mhsac`, `moe`, `softmod`) with its sizes."""
    if kind == "d2r":
        from d2r.nets.d2r_net import D2RNet

        return D2RNet(in_dim, out_dim, num_tasks, **net_args)
    from d2r.nets import baselines

    classes = {
        "mtsac": baselines.MTSACNet,
        "mhsac": baselines.MultiHeadNet,
        "moe": baselines.MixtureOfExpertsNet,
        "softmod": baselines.SoftModularNet,
    }
    if kind not in classes:
        raise ValueError(f"unknown network kind {kind!r} (known: d2r, {', '.join(classes)})")
    return classes[kind](in_dim, out_dim, num_tasks, **net_args)
