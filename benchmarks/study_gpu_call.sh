#!/usr/bin/env bash
# A full-budget study on one GPU with the JAX backend, filling one
# time-limited call. STUDY (default inpaint/full_mnist32) is one of
#
#   inpaint/full_mnist32  configs/inpaint/full_mnist32.py: MNIST 32x32, all
#                         60,000 training images, 50 epochs; runs of
#                         train_inpaint.py; JOBS default "cram:0 cnn_encoder:0"
#   cram_cls/full         configs/cram_cls/full.py: 60x60 cluttered MNIST,
#                         all 55,000 training images, up to 50 epochs; runs
#                         of train_cls.py; JOBS default
#                         "oracle:0 saliency:0 none:0 oracle:1"
#
# From the repository root:
#
#   OUT=/some/dir DATA_DIR=.devdata/mnist bash benchmarks/study_gpu_call.sh
#   STUDY=cram_cls/full OUT=/some/dir DATA_DIR=.devdata/mnist \
#     bash benchmarks/study_gpu_call.sh
#
# Every job of JOBS (VARIANT:SEED words, VARIANT and SEED among the
# configuration's VARIANTS and SEEDS) is one process of `TRAIN_SCRIPT
# --config STUDY:VARIANT --seed SEED`, all at once on the one GPU, in
# RUNS_DIR/VARIANT_seedSEED (the layout of `run_study.py STUDY`), its
# console log in RUNS_DIR/logs/. STOP_AFTER seconds after this script
# started (default 540) every run still training gets SIGTERM (it ends as
# at Ctrl-C, its completed epochs saved, exit 143), and SIGKILL STOP_GRACE
# seconds later (default 10). Then `run_study.py STUDY --progress` reads the
# run directories (no training) and OUT receives at most 8 files, each
# under 16 MiB, 64 MiB together:
#
#   NAME.json                      the progress file (NAME: the basename of
#                                  the configuration's OUTPUT,
#                                  inpaint_full_mnist32 or cram_cls_full;
#                                  backend: jax). inpaint: per run and epoch
#                                  the validation hole PSNR against steps,
#                                  the CRAM - CNN-encoder gap, a finished
#                                  run's final test scores. cram_cls: per run
#                                  the validation error per epoch, the best
#                                  validation epoch and error, a finished
#                                  run's test error (and the finished runs
#                                  summarised as the study records them)
#   FIGURE.png                     its figure (the configuration's FIGURES
#                                  gap, inpaint_full_mnist32_gap.png, or
#                                  curves, cram_cls_full_curves.png)
#   runs.tar.gz                    every run's config.json, log.csv,
#                                  metrics.json and figures (the newest epoch
#                                  figure), the console logs (their last MiB),
#                                  nvidia-smi's samples; no checkpoints
#   summary.txt                    per job: epochs done, best validation hole
#                                  PSNR (inpaint) or error (cram_cls),
#                                  finished or not, exit, wall time
#   model_VARIANT_seedSEED.keras   a finished run's model, where it fits
#
# A run's checkpoint (weights and Adam's slots: about 170 MB for
# inpainting, 67 MB for classification) cannot come back, so nothing
# carries over to a later call: each call trains its runs from the start.
# Everything ends by CALL_SECONDS (default 595) after the start: the report
# gets at most REPORT_TIMEOUT seconds (default 120) and stops 10 s before
# it. More settings: RUNS_DIR (default runs/study_gpu_call), PYTHON (default
# python), DTYPE_POLICY (--set dtype_policy=... of every run), EXTRA
# (--smoke and --set KEY=VALUE words for every run and the report, e.g. for
# a smoke test). DATA_DIR holds the four official MNIST IDX files; .whl
# (optional) holds wheels the machine lacks, installed into /tmp/site. Bad
# settings are refused, one line each, before anything runs (exit 2); the
# exit is 1 when a run failed on its own or the report failed, else 0.
set -u
cd "$(dirname "$0")/.."
start=$(date +%s)

MAX_FILES=8
MAX_FILE_BYTES=$((16 * 1024 * 1024)) # each file of OUT stays below this
MAX_TOTAL_BYTES=$((64 * 1024 * 1024))
LOG_TAIL_BYTES=$((1024 * 1024))
PACK_SECONDS=10 # kept after the report for the pack

refuse() {
  echo "$*" >&2
  exit 2
}
whole() { # whole NAME VALUE: a whole number of seconds, or refuse
  case "$2" in
    '' | *[!0-9]*) refuse "$1 must be a whole number of seconds. Received: '$2'" ;;
  esac
}

STUDY=${STUDY:-inpaint/full_mnist32}
case "$STUDY" in
  inpaint/full_mnist32)
    TRAIN_SCRIPT=train_inpaint.py FIGURE_KEY=gap DEFAULT_JOBS="cram:0 cnn_encoder:0"
    BEST_TITLE="best val hole PSNR (dB)" ;;
  cram_cls/full)
    TRAIN_SCRIPT=train_cls.py FIGURE_KEY=curves
    DEFAULT_JOBS="oracle:0 saliency:0 none:0 oracle:1"
    BEST_TITLE="best val error (%)" ;;
  *) refuse "STUDY is inpaint/full_mnist32 or cram_cls/full. Received: '$STUDY'" ;;
esac
CONFIG=$STUDY
CONFIG_FILE=configs/$STUDY.py
# The configuration's variant names, seeds, result file and figure.
VARIANTS=$(awk '/^VARIANTS = \{/ { on = 1; next } on && /^\}/ { exit }
  on && match($0, /^    "[A-Za-z0-9_]+"/) { printf "%s ", substr($0, 6, RLENGTH - 6) }' "$CONFIG_FILE")
VARIANTS=${VARIANTS% }
SEEDS=$(sed -n 's/^SEEDS = \[\(.*\)\]$/\1/p' "$CONFIG_FILE" | tr -d ,)
RESULT_FILE=$(sed -n 's/^OUTPUT = "\(.*\)"$/\1/p' "$CONFIG_FILE")
RESULT_FILE=${RESULT_FILE##*/}
FIGURE_FILE=$(awk -v key="\"$FIGURE_KEY\":" '/^FIGURES = \{/ { on = 1; next }
  on && /^\}/ { exit } on && $1 == key { gsub(/[",]/, "", $2); print $2 }' "$CONFIG_FILE")
FIGURE_FILE=${FIGURE_FILE##*/}
[ -n "$VARIANTS" ] && [ -n "$SEEDS" ] && [ -n "$RESULT_FILE" ] && [ -n "$FIGURE_FILE" ] ||
  refuse "$CONFIG_FILE lacks VARIANTS, SEEDS, OUTPUT or FIGURES[\"$FIGURE_KEY\"]"

OUT=${OUT:-}
[ -n "$OUT" ] || refuse "set OUT to the output folder"
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  refuse "OUT $OUT must be empty: it receives at most $MAX_FILES files"
fi
DATA_DIR=${DATA_DIR:-}
[ -n "$DATA_DIR" ] || refuse "set DATA_DIR to the folder of the four MNIST IDX .gz files"
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
  t10k-labels-idx1-ubyte; do
  [ -f "$DATA_DIR/$name.gz" ] || [ -f "$DATA_DIR/$name" ] ||
    refuse "DATA_DIR $DATA_DIR lacks $name.gz (the four official MNIST IDX files)"
done
STOP_AFTER=${STOP_AFTER:-540}
CALL_SECONDS=${CALL_SECONDS:-595}
STOP_GRACE=${STOP_GRACE:-10}
REPORT_TIMEOUT=${REPORT_TIMEOUT:-120}
whole STOP_AFTER "$STOP_AFTER"
whole CALL_SECONDS "$CALL_SECONDS"
whole STOP_GRACE "$STOP_GRACE"
whole REPORT_TIMEOUT "$REPORT_TIMEOUT"
if [ $((STOP_AFTER + STOP_GRACE + PACK_SECONDS + 5)) -gt "$CALL_SECONDS" ]; then
  refuse "STOP_AFTER ($STOP_AFTER) + STOP_GRACE ($STOP_GRACE) + $((PACK_SECONDS + 5)) s \
for the report and the pack must fit in CALL_SECONDS ($CALL_SECONDS)"
fi

JOBS=${JOBS:-$DEFAULT_JOBS}
names=()
read -r -a job_words <<<"$JOBS"
for job in "${job_words[@]}"; do
  variant=${job%%:*} seed=${job#*:}
  case " $VARIANTS " in *" $variant "*) ;; *) variant= ;; esac
  case " $SEEDS " in *" $seed "*) ;; *) seed= ;; esac
  [ "$job" = "$variant:$seed" ] ||
    refuse "a job is VARIANT:SEED with VARIANT one of ${VARIANTS// /, } and SEED one of ${SEEDS// /, }. Received: '$job'"
  case " ${names[*]} " in *" ${variant}_seed$seed "*) refuse "job $job appears twice" ;; esac
  names+=("${variant}_seed$seed")
done
[ ${#names[@]} -gt 0 ] || refuse "JOBS names no job"

# --smoke and --set KEY=VALUE words, for every run and the report.
sets=()
expect_value=0
read -r -a extra_words <<<"${EXTRA:-}"
for word in "${extra_words[@]}"; do
  if [ $expect_value = 1 ]; then
    case "$word" in [A-Za-z_]*=*) ;; *) refuse "EXTRA: --set takes KEY=VALUE. Received: '$word'" ;; esac
    expect_value=0
  else
    case "$word" in
      --set) expect_value=1 ;;
      --set=[A-Za-z_]*=* | --smoke) ;;
      *) refuse "EXTRA holds --smoke and --set KEY=VALUE words only. Received: '$word'" ;;
    esac
  fi
  sets+=("$word")
done
[ $expect_value = 0 ] || refuse "EXTRA: --set at its end takes KEY=VALUE"
[ -z "${DTYPE_POLICY:-}" ] || sets+=(--set "dtype_policy=$DTYPE_POLICY")

if [ -z "${PYTHON:-}" ]; then
  PYTHON=python
  command -v python >/dev/null || PYTHON=python3
fi
command -v "$PYTHON" >/dev/null || refuse "PYTHON $PYTHON is no command"
RUNS_DIR=${RUNS_DIR:-runs/study_gpu_call}
LOGS=$RUNS_DIR/logs
REPORT=$RUNS_DIR/report
mkdir -p "$OUT" "$LOGS" "$REPORT" || exit 2

export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
# Several processes share the GPU: none takes 75 % of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ -d .whl ] && ! "$PYTHON" -c "import keras" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD

# Whatever way this script ends, no process of it is left behind.
declare -A pid began ended code stopped
monitor=
cleanup() {
  local name
  for name in "${!pid[@]}"; do
    [ -n "${code[$name]:-}" ] || kill -KILL -- "-${pid[$name]}" 2>/dev/null
  done
  [ -z "$monitor" ] || kill "$monitor" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total \
    --format=csv,noheader,nounits -l 5 >"$LOGS/nvidia_smi.csv" 2>/dev/null &
  monitor=$!
fi
"$PYTHON" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), '| keras', keras.__version__)" ||
  exit 1
echo "jobs: ${names[*]}; stop after ${STOP_AFTER} s; ${sets[*]}"

# Each run in its own process group (job control), so that a signal reaches
# whatever it started.
set -m
for name in "${names[@]}"; do
  variant=${name%_seed*} seed=${name##*_seed}
  "$PYTHON" "$TRAIN_SCRIPT" --config "$CONFIG:$variant" --seed "$seed" \
    --data-dir "$DATA_DIR" --output-dir "$RUNS_DIR/$name" "${sets[@]}" \
    </dev/null >"$LOGS/$name.log" 2>&1 &
  pid[$name]=$!
  began[$name]=$(date +%s)
done

reap() { # records the runs that have ended; returns 1 while one runs
  local name running=0
  for name in "${names[@]}"; do
    [ -z "${code[$name]:-}" ] || continue
    if kill -0 "${pid[$name]}" 2>/dev/null; then
      running=1
    else
      wait "${pid[$name]}"
      code[$name]=$?
      ended[$name]=$(date +%s)
    fi
  done
  return $running
}

until reap || [ "$(date +%s)" -ge $((start + STOP_AFTER)) ]; do
  sleep 1
done
if ! reap; then
  for name in "${names[@]}"; do
    if [ -z "${code[$name]:-}" ]; then
      kill -TERM -- "-${pid[$name]}" 2>/dev/null
      stopped[$name]=SIGTERM
    fi
  done
  grace_end=$(($(date +%s) + STOP_GRACE))
  until reap || [ "$(date +%s)" -ge $grace_end ]; do
    sleep 0.2
  done
  for name in "${names[@]}"; do
    if [ -z "${code[$name]:-}" ]; then
      kill -KILL -- "-${pid[$name]}" 2>/dev/null
      stopped[$name]=SIGKILL
    fi
  done
  until reap; do sleep 0.2; done
fi
set +m
if [ -n "$monitor" ]; then
  kill "$monitor" 2>/dev/null
  wait "$monitor" 2>/dev/null
  monitor=
fi
echo "training ended after $(($(date +%s) - start)) s"

# The progress report (nothing trains), within the time the call leaves.
report_code=skipped
limit=$((start + CALL_SECONDS - PACK_SECONDS - $(date +%s)))
[ $limit -le "$REPORT_TIMEOUT" ] || limit=$REPORT_TIMEOUT
if [ $limit -ge 5 ]; then
  timeout -k 2 $limit "$PYTHON" run_study.py "$CONFIG" --progress --runs-dir "$RUNS_DIR" \
    --output "$REPORT/$RESULT_FILE" \
    --figure "$FIGURE_KEY=$REPORT/$FIGURE_FILE" "${sets[@]}" \
    </dev/null >"$LOGS/progress_report.log" 2>&1
  report_code=$?
fi
if [ "$report_code" = 0 ]; then
  # Every run of the call trained on JAX: the file says so (the renderer
  # reads a result file without "backend" as TensorFlow's).
  "$PYTHON" - "$REPORT/$RESULT_FILE" <<'EOF' || report_code=1
import json, sys

with open(sys.argv[1]) as f:
    result = json.load(f)
result["backend"] = "jax"
with open(sys.argv[1], "w") as f:
    json.dump(result, f, indent=2, sort_keys=True)
    f.write("\n")
EOF
fi
echo "progress report: exit $report_code"
[ ! -f "$LOGS/progress_report.log" ] || tail -c 2000 "$LOGS/progress_report.log"

# summary.txt: one line per job, then the GPU's samples.
csv_column() { # csv_column FILE NAME: the values of one column of a CSV file
  awk -F, -v key="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == key) c = i; next }
    c { print $c }' "$1"
}
failed=0
{
  printf '%-18s %-8s %-30s %-9s %-22s %s\n' job epochs "$BEST_TITLE" finished \
    exit "wall (s)"
  for name in "${names[@]}"; do
    dir=$RUNS_DIR/$name
    done_epochs=0 best=- planned=?
    if [ -f "$dir/log.csv" ]; then
      done_epochs=$(($(wc -l <"$dir/log.csv") - 1))
      if [ "$STUDY" = cram_cls/full ]; then # the lowest validation error
        best=$(csv_column "$dir/log.csv" val_accuracy | awk '{ v = 100 * (1 - $1) }
          NR == 1 || v < m { m = v; e = NR }
          END { if (NR) printf "%.2f (epoch %d)", m, e; else print "-" }')
      else # the highest validation hole PSNR
        best=$(csv_column "$dir/log.csv" val_hole_psnr | awk 'NR == 1 || $1 > m { m = $1; e = NR }
          END { if (NR) printf "%.2f (epoch %d)", m, e; else print "-" }')
      fi
    fi
    if [ -f "$dir/config.json" ]; then
      planned=$(grep -o '"epochs": *[0-9]*' "$dir/config.json" | grep -o '[0-9]*$' | head -n 1)
    fi
    finished=no
    [ ! -f "$dir/metrics.json" ] || finished=yes
    how=${code[$name]}
    [ -z "${stopped[$name]:-}" ] || how="$how (stopped, ${stopped[$name]})"
    if [ -z "${stopped[$name]:-}" ] && [ "${code[$name]}" != 0 ]; then
      failed=1
      how="$how (failed)"
    fi
    printf '%-18s %-8s %-30s %-9s %-22s %s\n' "$name" "$done_epochs/$planned" "$best" \
      "$finished" "$how" "$((ended[$name] - began[$name]))"
  done
  if [ -s "$LOGS/nvidia_smi.csv" ]; then
    awk -F', *' '{ n++; u += $2; if ($2 > mu) mu = $2; if ($3 > mm) mm = $3; t = $4 }
      END { printf "GPU: %d samples, utilisation mean %.0f %%, max %d %%; memory max %d of %d MiB\n",
        n, u / n, mu, mm, t }' "$LOGS/nvidia_smi.csv"
  fi
  echo "progress report: exit $report_code; ended after $(($(date +%s) - start)) s of $CALL_SECONDS"
} >"$OUT/summary.txt"
cat "$OUT/summary.txt"

# runs.tar.gz: the small files of every run (no checkpoints, TensorBoard
# logs or models), the console logs' last MiB, nvidia-smi's samples.
stage=$RUNS_DIR/.pack
rm -rf "$stage"
mkdir -p "$stage/logs"
for log in "$LOGS"/*; do
  [ ! -f "$log" ] || tail -c $LOG_TAIL_BYTES "$log" >"$stage/logs/${log##*/}"
done
members=()
for name in "${names[@]}"; do
  dir=$RUNS_DIR/$name
  [ -d "$dir" ] || continue
  for file in "$dir"/*; do
    [ -f "$file" ] && [ "${file##*/}" != model.keras ] && members+=("$name/${file##*/}")
  done
  newest=$(ls "$dir"/figures/epoch_*.png 2>/dev/null | tail -n 1)
  [ -z "$newest" ] || members+=("$name/figures/${newest##*/}")
done
tar -czf "$OUT/runs.tar.gz" -C "$RUNS_DIR" "${members[@]}" -C "$stage" logs || failed=1
rm -rf "$stage"
for file in "$RESULT_FILE" "$FIGURE_FILE"; do
  [ ! -f "$REPORT/$file" ] || cp "$REPORT/$file" "$OUT/$file"
done

# A finished run's model, while OUT stays within its limits.
for name in "${names[@]}"; do
  model=$RUNS_DIR/$name/model.keras
  [ -f "$model" ] || continue
  size=$(stat -c %s "$model")
  total=$(du -cb "$OUT"/* | tail -n 1 | cut -f 1)
  if [ "$(ls "$OUT" | wc -l)" -lt $MAX_FILES ] && [ "$size" -lt $MAX_FILE_BYTES ] &&
    [ $((total + size)) -le $MAX_TOTAL_BYTES ]; then
    cp "$model" "$OUT/model_$name.keras"
  else
    echo "$name: model.keras ($size bytes) left out: OUT's limits"
  fi
done

for file in "$OUT"/*; do
  size=$(stat -c %s "$file")
  echo "${file##*/}: $size bytes"
  [ "$size" -lt $MAX_FILE_BYTES ] || echo "WARNING: ${file##*/} is not under $MAX_FILE_BYTES bytes"
done
echo "done after $(($(date +%s) - start)) s"
if [ "$failed" = 1 ] || { [ "$report_code" != 0 ] && [ "$report_code" != skipped ]; }; then
  exit 1
fi
exit 0
