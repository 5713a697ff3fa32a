#!/usr/bin/env bash
# The README's performance table, regenerated: every figure is mmesid against its reference
# measured in the same process (ratios), at 1 and 2 threads where threads matter.
#
#     bash benchmarks/performance.sh            # ~10 minutes on 2 idle cores
#     USERS=100000 bash benchmarks/performance.sh   # a quicker formula-9 run
#
# Run it on an idle machine: the ratios hold under load, the absolute times do not.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
USERS=${USERS:-1000000}
echo "# mmesid performance, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
for t in 1 2; do
    echo
    OMP_NUM_THREADS=$t $PY benchmarks/bench_evaluate.py --threads "$t"
done
echo
OMP_NUM_THREADS=1 $PY benchmarks/bench_concordance.py --users "$USERS" --workers 2
for t in 1 2; do
    echo
    OMP_NUM_THREADS=$t $PY benchmarks/bench_mmd.py --threads "$t"
done
