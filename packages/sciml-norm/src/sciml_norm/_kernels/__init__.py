"""Triton kernels of sciml-norm; ``triton`` is imported inside the functions that first launch them."""
