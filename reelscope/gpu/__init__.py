"""The analysis on a GPU: every model in PyTorch, fed by per-model dynamic batchers that
each run on their own CUDA stream, with preprocessing on the device."""
