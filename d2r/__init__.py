"""D2R: Dynamic Depth Routing for multi-task reinforcement learning on Meta-World."""

__version__ = "0.1.0"
