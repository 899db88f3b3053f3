"""Diffusion model sets: the registry (which weights), the hub (finding and pulling them), verification
(hashes), loading them into torch modules (parts), and SD 1.5's real-size architecture with random
weights for benchmarks (random_weights).
"""
