"""Device utilities: which device the models run on, its CUDA streams and memory budget,
and worker processes for work that must leave the analysis process."""
