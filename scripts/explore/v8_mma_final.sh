#!/usr/bin/env bash
# One GPU session for the v8_05+ ladder (flashcore/specs/v8_mma.py): checks, timings, variant sweep, ncu, sanitizers.
# Usage on the GPU host: bash scripts/v8_mma_final.sh   (writes under $OUT)
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
SAN="1,8,512,64;2,3,77,64;1,2,100,64,300;1,1,1,64;1,2,1000,64"
python3 scripts/v8_mma_sweep.py --out "$OUT" \
  --main v8_04_grid_132sm,v8_05_mma_registers,v8_06_cluster_splitkv,v8_07_dsmem_push,v8_08_kv_wait_split,v8_09_two_mtiles,flashcore \
  --variants "[('v8_09_two_mtiles','c2',(('CLUSTER','2'),),2,None),('v8_09_two_mtiles','s3',(('STAGES','3'),),None,3),('v8_07_dsmem_push','c2s3',(('CLUSTER','2'),('STAGES','3')),2,3)]" \
  --ncu v8_05_mma_registers,v8_06_cluster_splitkv,v8_07_dsmem_push,v8_08_kv_wait_split,v8_09_two_mtiles,flashcore \
  --ncu-shapes "1,8,512,64;4,16,4096,64" \
  --sanitize v8_09_two_mtiles,flashcore --san-shapes "$SAN" 2>&1 | grep -v "^$" | grep -v FLASHCORE-LAUNCH
echo "=== v8_10 (separate process, 100 s limit: a hang here cannot take the rest down)"
timeout 100 python3 scripts/v8_mma_sweep.py --out "$OUT/v8_10" --main v8_10_mbarrier_combine \
  --variants "[('v8_10_mbarrier_combine','c2s3',(('CLUSTER','2'),('STAGES','3')),2,3),('v8_10_mbarrier_combine','s3',(('STAGES','3'),),None,3)]" \
  --ncu v8_10_mbarrier_combine --ncu-shapes "1,8,512,64" \
  --sanitize v8_10_mbarrier_combine --san-shapes "$SAN" 2>&1 | grep -v "^$" | grep -v FLASHCORE-LAUNCH
echo "v8_10 exit: ${PIPESTATUS[0]}"
