"""Pieces the methods' networks share: PyTorch-semantics layers, mixed precision, map smoothing,
parameter tables."""
