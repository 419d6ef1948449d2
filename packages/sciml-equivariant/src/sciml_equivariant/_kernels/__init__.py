"""Triton kernels of sciml-equivariant (loaded lazily; CUDA only)."""
