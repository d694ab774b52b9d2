"""D2R: Dynamic Depth Routing for multi-task reinforcement learning on Meta-World."""

import os

# MKL otherwise picks code paths by memory alignment, so the same run can differ in the last
# bits from one process to the next; exact resume and same-seed-same-numbers need this.
# It must be set before MKL's first call, hence here, before anything imports torch.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
