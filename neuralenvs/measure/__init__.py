"""How close a dream is to the real game, measured against held-out real episodes: frame metrics
(PSNR, SSIM), multi-step fidelity and head scores, and latent-action controllability.

These need a model and data only, no agent: the trainer uses them to fill a checkpoint's metrics,
so they sit below ``training/``. Benchmarks that train or play agents live in ``bench/``, above it.
"""
