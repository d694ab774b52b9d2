"""Multi-task SAC: the agent and its update, replay, collection, the training loop, evaluation, a saved policy."""
