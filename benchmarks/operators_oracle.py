"""W2 against NFE of every sampler for every corruption operator, on the exact Gaussian oracle, in closed form.

    python benchmarks/operators_oracle.py [--out DIR] [--size 32] [--nfe 5,10,20,35,50,100,200]

Data x_0 ~ N(0, diag λ) in the basis where the operator is diagonal (:func:`softdiff.spectra.gaussian_basis`): the
natural-image power law λ ∝ 1/(1 + k² + l²) over DCT indices with a mean pixel variance of 0.25, seen in that basis
(exact for the DCT; for the Haar and pixel bases the power law's per-coefficient variances, its off-diagonal
covariances dropped). Every operator runs with the noise σ from 0.02 to 80 of ``nfe_speed.py`` and level(t) =
level_max sin²(πt/2) with the command line's default level_max (0.36 · side px of blur, the coarsest Haar scale,
1 otherwise). For each sampler (uniform grid) and NFE: the relative W2 of the output law to the data law,
‖√v − √λ‖/‖√λ‖ over the basis coefficients, from :mod:`softdiff.closed_form` (float64, no sampling: seconds).

Writes ``DIR/operators_oracle.json`` (``records``: operator, sampler, nfe, w2_rel) and ``DIR/operators_oracle.md``.
DIR defaults to ``benchmarks/results/operators_oracle-<date>``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch

import softdiff as sd
from softdiff import closed_form
from softdiff.spectra import relative_w2

OPERATORS = ("dct_blur", "pixelate", "desaturate", "masking", "dct_blur+desaturate", "pixelate+desaturate", "identity")
NFES = (5, 10, 20, 35, 50, 100, 200)
SIGMA_MIN, SIGMA_MAX = 0.02, 80.0


def oracle_process(name: str, size: int) -> sd.SoftDiffusionProcess:
    """The operator a command line names, default levels, and the noise of nfe_speed.py."""
    operator = sd.operator_from_name(name, size, size)
    level_max = sd.operators.default_levels_max(operator, size, size)
    levels = sd.LevelSchedule.zero() if level_max == 0 else sd.LevelSchedule.sin2(level_max)
    return sd.SoftDiffusionProcess(operator, noise=sd.GeometricNoise(SIGMA_MIN, SIGMA_MAX), levels=levels)


def measure(operators, samplers, nfes, size: int) -> list[dict]:
    records = []
    for name in operators:
        process = oracle_process(name, size)
        oracle = sd.oracle.GaussianDenoiser.power_law(process, (3, size, size))
        process.data_spectrum = oracle.data_spectrum()  # the ancestral sampler's posterior variances: exact here
        for sampler in samplers:
            for nfe in nfes:
                output = closed_form.output_variance(oracle.variance, process, nfe, sampler)
                w2 = relative_w2(oracle.variance, output)
                records.append(dict(operator=name, sampler=sampler, nfe=nfe, w2_rel=w2,
                                    level_max=process.levels.level_max, basis=repr(oracle.basis)))  # fmt: skip
            row = " ".join(f"{r['nfe']}:{r['w2_rel']:.4f}" for r in records[-len(nfes) :])
            print(f"{name:>20} {sampler:>12} {row}", flush=True)
    return records


def markdown(records, operators, samplers, nfes) -> str:
    lines = ["| operator | sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in nfes) + " |"]  # fmt: skip
    for name in operators:
        for sampler in samplers:
            row = {r["nfe"]: r["w2_rel"] for r in records if r["operator"] == name and r["sampler"] == sampler}
            lines.append(f"| {name} | {sampler} | " + " | ".join(f"{row[n]:.4f}" for n in nfes) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder")
    parser.add_argument("--size", type=int, default=32, help="image side (3 channels)")
    parser.add_argument("--nfe", default=",".join(map(str, NFES)), help="comma-separated NFEs")
    parser.add_argument("--operators", default=",".join(OPERATORS), help="comma-separated operator names")
    args = parser.parse_args(argv)
    nfes = tuple(int(v) for v in args.nfe.split(","))
    operators = tuple(args.operators.split(","))
    samplers = sd.samplers.SAMPLERS
    records = measure(operators, samplers, nfes, args.size)
    out = Path(args.out or f"benchmarks/results/operators_oracle-{datetime.date.today().isoformat()}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "command": " ".join([sys.executable, *sys.argv]),
            "size": args.size, "sigma": [SIGMA_MIN, SIGMA_MAX]}  # fmt: skip
    (out / "operators_oracle.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    (out / "operators_oracle.md").write_text(markdown(records, operators, samplers, nfes))
    print(f"wrote {out / 'operators_oracle.json'} and {out / 'operators_oracle.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
