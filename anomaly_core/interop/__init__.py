"""PyTorch checkpoints: the state_dict <-> Flax conversion and the converter command."""
