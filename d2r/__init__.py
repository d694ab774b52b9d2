"""D2R: Dynamic Depth Routing for multi-task reinforcement learning on Meta-World."""

import os

# MKL otherwise picks code paths by memory alignment, so the same run can differ in the last
# bits from one process to the next; exact resume and same-seed-same-numbers need this.
# It must be set before MKL's first call, hence here, before anything imports torch.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"


def __getattr__(name: str):
    # `d2r.load_policy` (d2r/sac/policy.py), imported when first used: `import d2r` stays free of torch
    # (the Snakefile and the report read parameters and files only). By name, not an import
    # statement: d2r.pipeline.sources reads import statements, and no job reaches d2r.sac.policy through here.
    if name == "load_policy":
        import importlib

        return importlib.import_module("d2r.sac.policy").load_policy
    raise AttributeError(f"module 'd2r' has no attribute {name!r}")
