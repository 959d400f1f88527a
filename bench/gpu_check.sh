#!/usr/bin/env bash
# The GPU check: on a machine with one CUDA device and only torch, pandas, pyarrow and
# pyyaml installed, train the default trial and a pack on CUDA through `oodstudy trial`
# (no Ray, no Optuna, no DuckDB needed), count the host syncs of the training loop, and
# run bench/pack.py and bench/train_step.py on CUDA.  About 6-8 minutes in all; each part
# has its own time limit, so one that hangs or fails leaves the others their time.
#
# pydantic is not on such a machine: carry its wheels for the machine's Python (3.12,
# x86-64 Linux) in .whl/ (git-ignored), made here once with
#
#     pip download pydantic --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 -d .whl
#
# and the script unpacks them into a scratch folder on the path (a wheel is a zip; no pip
# needed).  Run from the repository root:
#
#     bash bench/gpu_check.sh            # writes logs and figures under $OUT (default /tmp/gpu_check)
#     GPU_CHECK_DRY=1 bash bench/gpu_check.sh   # the same plumbing on the CPU, tiny (a minute or two)
#
# It prints one line per part (its exit code and seconds) and ends with ONE JSON line:
# every part's status, the trials' summary metrics and seconds, the sync count, and the
# last JSON line of each bench.  Logs: $OUT/<part>.log.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if ! python -c "import pydantic" 2>/dev/null; then
    python - "$OUT/pylib" <<'EOF'
import glob, sys, zipfile
wheels = sorted(glob.glob(".whl/*.whl"))
if not wheels:
    sys.exit("no pydantic and no wheels in .whl/: see the top of bench/gpu_check.sh")
for wheel in wheels:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
print(f"unpacked {len(wheels)} wheels into {sys.argv[1]}")
EOF
    export PYTHONPATH="$OUT/pylib:$PYTHONPATH"
fi

DEVICE=cuda
PACK=16  # members of the pack trial
TRIAL=()  # extra --set of the trials
PACK_BENCH=(--ks 1,4,16,32,64,128 --ks-small 1,4,16 --steps 10 --solo-steps 20 --impl-k 32 --eval-ks 1,16,64
            --eval-examples 128)
STEP_BENCH=(--steps 20)
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
    DEVICE=cpu
    PACK=2
    TRIAL=(--set train.steps=20 --set train.eval_every=10 --set task.eval_examples=4)
    PACK_BENCH=(--ks 1,2 --ks-small 1 --presets nano --steps 1 --solo-steps 1 --impl-k 2 --impl-seconds 0.2
                --eval-ks 1,2 --eval-examples 2)
    STEP_BENCH=(--steps 2 --sizes nano --packs 1,2 --pack-steps 1)
fi

part() {  # part NAME SECONDS COMMAND...: run it with a time limit, its output to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    local started=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - started)) s" | tee -a "$OUT/parts.txt"
}
: > "$OUT/parts.txt"

part environment 60 python -c "
import sys, torch
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE')
assert torch.cuda.is_available() or '$DEVICE' == 'cpu'
"
# the default trial (probes off: they need scikit-learn), then a pack of $PACK seeds
part trial 150 python -m study.cli trial --json --set train.device=$DEVICE --set task.probes.enabled=false "${TRIAL[@]}"
part trial_pack 150 python -m study.cli trial --json --set train.device=$DEVICE --set task.probes.enabled=false \
    --set pack.size=$PACK --set train.steps=2000 --set train.eval_every=1000 "${TRIAL[@]}"
# host syncs inside a logging window: 90 steps logged every 30, evaluated only at the end.  Between the
# log steps 30 and 60 the loop should sync only at step 60's two reads (diverged members, the logged values)
[ "$DEVICE" = cuda ] && part syncs 90 python - <<'EOF'
import json, warnings
import torch
from study.config import trial_config
from study.train import pack_members, train_pack

cfg = trial_config(overrides={"train.device": "cuda", "pack.size": 4, "train.steps": 90, "train.log_every": 30,
                              "train.eval_every": 90, "task.eval_examples": 4, "task.probes.enabled": False})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    marks = {}
    def progress(step, losses):  # called after the log step's reads
        marks[step] = len([w for w in caught if "synchroniz" in str(w.message)])
    torch.cuda.set_sync_debug_mode("warn")
    train_pack(pack_members(cfg), progress=progress)
    torch.cuda.set_sync_debug_mode("default")
syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
print(json.dumps({"marks": marks, "syncs_from_step_31_to_the_log_at_60": marks[60] - marks[30] if 60 in marks else None,
                  "expected": 2, "syncs_in_all": len(syncs), "examples": sorted(set(syncs))[:3]}))
EOF
part pack_bench 200 python bench/pack.py --device $DEVICE "${PACK_BENCH[@]}"
part train_step 90 python bench/train_step.py --device $DEVICE "${STEP_BENCH[@]}"

python - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def last_json(name):
    try:
        lines = [l for l in open(os.path.join(out, name + ".log")) if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
parts = dict(line.split(" ", 1) for line in open(os.path.join(out, "parts.txt")).read().splitlines())
trial, pack = last_json("trial"), last_json("trial_pack")
figures = {
    "parts": parts,
    "trial": trial and {k: trial.get(k) for k in ("status", "steps", "seconds", "device", "metrics")},
    "trial_pack": pack and [{k: m.get(k) for k in ("status", "steps", "seconds", "metrics")} for m in pack.get("members", [])],
    "syncs": last_json("syncs"),
    "pack_bench": last_json("pack_bench"),
    "train_step": last_json("train_step"),
}
print(json.dumps(figures))
EOF
