#!/bin/bash
# Download into .whl/ the cp312 manylinux wheels that a bare GPU machine (Python 3.12 with
# torch, transformers, numpy, pandas, pyarrow, scikit-learn, scipy, typer, rich, pytest) lacks
# for the GPU tests and benchmarks (benchmarks/gpu_round.sh installs them into /tmp/site).
# Run it here, where PyPI is reachable, then carry .whl. The set stays under the 64 MiB a call
# may carry: no PostGIS client (sqlalchemy, geoalchemy2, psycopg) and no pyogrio, which the
# GPU steps never import, and rasterio 1.4.3 (22 MB) rather than 1.4.4 (36 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
info="$(git rev-parse --git-dir)/info"
mkdir -p "$info"
grep -qx '/.whl/' "$info/exclude" 2>/dev/null || echo '/.whl/' >>"$info/exclude"
pkgs=(rasterio==1.4.3 affine==3.0.1 click-plugins==1.1.1.2 cligj==0.7.2 pyproj==3.7.2
      shapely==2.2.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0
      typing-inspection==0.4.2 albumentations==2.0.8 albucore==0.0.24 simsimd==6.5.16
      stringzilla==5.3.2 faiss-cpu==1.15.1)
plat=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014; do
  plat+=(--platform "${p}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${plat[@]}" -d .whl "${pkgs[@]}" 2> >(grep -v "is ignored" >&2)
echo "$(ls .whl | wc -l) wheels, $(du -sm .whl | cut -f1) MiB in .whl (a call carries at most 64 MiB with the tree)"
