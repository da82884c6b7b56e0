"""The samplers by name and kind: what :mod:`.samplers` runs, :mod:`.closed_form` models and the command lines offer.

A leaf module, so that the time grids (optimised against the closed form) sit between the closed form and the
samplers without an import cycle.
"""

SAMPLERS = ("momentum", "naive", "momentum_ode", "multistep", "heun", "ancestral", "multistep3", "heun3")
STOCHASTIC = ("momentum", "naive", "ancestral")  # they draw noise at every step; the others are deterministic
# The multistep exponential integrators (:mod:`.exponential_integrator`) by the order of their x̂_0 polynomial in
# the log-SNR: 2 (linear through two calls), 3 (quadratic through three).
MULTISTEP_ORDER = {"multistep": 2, "heun": 2, "multistep3": 3, "heun3": 3}
CORRECTED = ("heun", "heun3")  # redo each step with the call at its end (one call per step: it serves the next step)
NEEDS_DATA_SPECTRUM = ("ancestral",)  # the posterior variance comes from process.data_spectrum
