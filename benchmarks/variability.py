"""How much healthy scans differ from each other after the brain preparation: the
synthetic cohort next to real IXI T1 scans (``../shared/realdata``), prepared the
same way (`brain3d-behrendt`).

    python -m benchmarks.variability --out DIR [--scans 40] [--registration affine|deformable] [--sets synthetic,ixi]

Per set of scans: the per-voxel standard deviation across scans inside the brain
every scan shares (median and 90th percentile over those voxels), the same after a
3x3x3 mean filter (the spread of structure rather than of noise), and how much of
the template brain that shared brain covers. A synthetic cohort less variable than
real scans would make detection look easier than it is.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from scipy import ndimage

from benchmarks.machine import machine_info
from benchmarks.realdata import REALDATA


def spread(prepared: list) -> dict:
    """The per-voxel spread of prepared scans on one model grid."""
    images = np.stack([np.asarray(p.image, np.float32) for p in prepared])
    shared = np.logical_and.reduce([np.asarray(p.region, bool) for p in prepared])
    union = np.logical_or.reduce([np.asarray(p.region, bool) for p in prepared])
    std = images.std(axis=0)[shared]
    smooth = np.stack([ndimage.uniform_filter(image, 3) for image in images]).std(axis=0)[shared]
    brain_ml = [float(np.asarray(p.region).sum()) * float(np.prod(p.grid.spacing)) / 1000.0 for p in prepared]
    return {"scans": len(prepared), "voxel_std_median": round(float(np.median(std)), 4),
            "voxel_std_p90": round(float(np.percentile(std, 90)), 4),
            "smoothed_std_median": round(float(np.median(smooth)), 4),
            "shared_brain_share_of_union": round(float(shared.sum() / max(union.sum(), 1)), 3),
            "brain_ml": {"median": round(float(np.median(brain_ml)), 1), "min": round(min(brain_ml), 1), "max": round(max(brain_ml), 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--scans", type=int, default=40, help="scans per set (default 40)")
    parser.add_argument("--registration", choices=["affine", "deformable"], default="affine",
                        help="the brain preparation's registration (uad train --registration)")
    parser.add_argument("--sets", default="synthetic,ixi", help="which sets of scans (default synthetic,ixi)")
    args = parser.parse_args()
    from uadcore.io import read_manifest
    from uadcore.preprocess import make_preset
    from uadcore.synth import synthesize_cohort
    from uadcore.preprocess.dataset import prepare_scans

    os.makedirs(args.out, exist_ok=True)
    preset = make_preset("brain3d-behrendt", registration=args.registration)
    result = {"benchmark": "variability", "machine": machine_info(), "preset": preset.to_dict()}
    sets = args.sets.split(",")
    if "synthetic" in sets:
        cohort = synthesize_cohort(os.path.join(args.out, "cohort"), healthy=args.scans, unhealthy=0, seed=11, progress=True)
        result["synthetic"] = spread([p for p, _ in prepare_scans(read_manifest(cohort), preset)])
    if "ixi" in sets and os.path.isdir(REALDATA):
        real = read_manifest(os.path.join(REALDATA, "healthy.csv"))[: args.scans]
        result["ixi"] = spread([r[0] for r in prepare_scans(real, preset, problems={}) if r is not None])
    print(json.dumps(result, indent=1))
    with open(os.path.join(args.out, "variability.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
