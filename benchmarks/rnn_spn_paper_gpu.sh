#!/usr/bin/env bash
# RNN-SPN Table 1, the paper protocol (benchmarks/rnn_spn_paper.py), on one
# GPU with the JAX backend: the three models train at once, one process each,
# until they finish or STOP_AFTER seconds have passed; then the progress file
# (per-epoch validation errors, test errors at the best validation epoch so
# far) and the two figures are written by `rnn_spn_paper.py --report`.
# Without STOP_AFTER (or with 0) every model trains to the end of its
# protocol; a time-limited lease passes the seconds it can spend.
#
# Made for the project's borrowed GPU machine (JAX with CUDA, no TensorFlow,
# no network; see the device tool's README), run from the repository root:
#
#   OUT=/some/dir DATA_DIR=.devdata/mnist bash benchmarks/rnn_spn_paper_gpu.sh
#   OUT=/some/dir DATA_DIR=.devdata/mnist STOP_AFTER=440 RESUME_PACK=rnn_spn \
#       bash benchmarks/rnn_spn_paper_gpu.sh     # what the committed run did
#
# DATA_DIR holds the four official MNIST IDX .gz files; .whl (optional) holds
# wheels the machine lacks (keras, namex, optree for Python 3.12), installed
# into /tmp/site. What comes out, in $OUT (at most a few files, as a lease
# allows): run_logs.tar.gz (each run directory's config, log.csv, checkpoint
# records and metrics, and each model's console log; no weights),
# report.tar.gz (the progress file rnn_spn_paper_gpu.json, the learning
# curves, the attention figure and the report's log) and, with RESUME_PACK,
# resume.tar.part-*. The runs stay in RUNS_DIR, so rerunning the script on
# the same machine continues them (crash-safe checkpoints).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the output folder}
DATA_DIR=${DATA_DIR:-.devdata/mnist}
RUNS_DIR=${RUNS_DIR:-runs/rnn_spn_paper_gpu}
STOP_AFTER=${STOP_AFTER:-0}
MODELS=${MODELS:-rnn_spn ffn_spn conv}
case "$STOP_AFTER" in
  '' | *[!0-9]*)
    echo "STOP_AFTER must be a whole number of seconds (0: no limit). Received: '$STOP_AFTER'" >&2
    exit 2 ;;
esac
start=$(date +%s)
mkdir -p "$OUT" "$RUNS_DIR"

export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
if [ -d .whl ] && ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
# Three processes share the GPU: no process takes 75 % of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export CRAM_KERAS_CACHE=${CRAM_KERAS_CACHE:-/tmp/cram_keras_cache}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), '| keras', keras.__version__)" || exit 1

# Generate (and cache) the 60k/10k/10k sequences once, before three processes
# would each do it.
python3 - "$DATA_DIR" <<'EOF' || exit 1
import sys, time
from cram_keras.experiments import rnn_spn
t = time.time()
config = rnn_spn.Config(data_dir=sys.argv[1])
splits, source = rnn_spn.load_splits(config)
print("data:", {k: v[0].shape for k, v in splits.items()}, f"{time.time() - t:.1f} s")
EOF

pids=()
for model in $MODELS; do
  python3 benchmarks/rnn_spn_paper.py --data-dir "$DATA_DIR" --runs-dir "$RUNS_DIR" \
    --models "$model" --schedule "$model:300" > "$RUNS_DIR/train_$model.log" 2>&1 &
  pids+=($!)
done
if [ "$STOP_AFTER" -gt 0 ]; then
  echo "training ${MODELS} (pids ${pids[*]}) until $STOP_AFTER s after the start"
else
  echo "training ${MODELS} (pids ${pids[*]}) to the end of the protocol"
fi
while :; do
  running=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
  [ "$running" = 0 ] && break
  [ "$STOP_AFTER" -gt 0 ] && [ $(( $(date +%s) - start )) -ge "$STOP_AFTER" ] && break
  sleep 5
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
wait
echo "training stopped after $(( $(date +%s) - start )) s"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader

tail -n 3 "$RUNS_DIR"/train_*.log
# The logs first (small, and what matters if the report fails).
tar czf "$OUT/run_logs.tar.gz" --exclude='*.h5' --exclude='*.keras' \
  --exclude='tensorboard' -C "$(dirname "$RUNS_DIR")" "$(basename "$RUNS_DIR")"
# RESUME_PACK: the newest epoch checkpoint and the best weights of these
# models, in chunks of 16 MB (resume.tar.part-*), so that the runs can be
# continued elsewhere (`cat resume.tar.part-* | tar x`).
if [ -n "${RESUME_PACK:-}" ]; then
  files=()
  for model in $RESUME_PACK; do
    ck="$RUNS_DIR/$model/checkpoints"
    newest=$(ls "$ck"/epoch-*.json 2>/dev/null | sort | tail -n 1)
    [ -n "$newest" ] || continue
    files+=("$model/config.json" "${newest#$RUNS_DIR/}" "${newest%.json}.weights.h5")
    files+=($(ls "$ck"/best-*.weights.h5 2>/dev/null | sort | tail -n 1))
  done
  files=("${files[@]#$RUNS_DIR/}")
  [ ${#files[@]} -gt 0 ] && tar cf - -C "$RUNS_DIR" "${files[@]}" \
    | split -b 16000000 - "$OUT/resume.tar.part-"
fi
python3 benchmarks/rnn_spn_paper.py --report --data-dir "$DATA_DIR" \
  --runs-dir "$RUNS_DIR" --output "$RUNS_DIR/rnn_spn_paper_gpu.json" \
  --command "OUT=DIR DATA_DIR=MNIST_DIR bash benchmarks/rnn_spn_paper_gpu.sh" \
  --curves-figure "$RUNS_DIR/rnn_spn_paper_gpu_curves.png" \
  --attention-figure "$RUNS_DIR/rnn_spn_attention_gpu.png" > "$RUNS_DIR/report.log" 2>&1
rc=$?
tail -n 8 "$RUNS_DIR/report.log"
tar czf "$OUT/report.tar.gz" -C "$RUNS_DIR" report.log rnn_spn_paper_gpu.json \
  rnn_spn_paper_gpu_curves.png rnn_spn_attention_gpu.png
ls -la "$OUT"
echo "done after $(( $(date +%s) - start )) s (report exit $rc)"
exit $rc
