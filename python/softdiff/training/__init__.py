"""Training a Soft Diffusion model: the settings and presets (:mod:`.config`), what a run is built from
(:mod:`.build`), its per-step randomness, EMA and schedule (:mod:`.state`), and the loop (:mod:`.loop`). The command
is :mod:`softdiff.cli.train` (``python -m softdiff.train``)."""
