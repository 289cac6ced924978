"""CuPy RawKernel implementations and the layer that loads their CUDA sources."""
