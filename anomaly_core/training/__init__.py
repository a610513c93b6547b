"""Training: the mesh and global batches, prefetching, the one training loop, checkpoints, the
workdir's lock, progress lines and TensorBoard files."""
