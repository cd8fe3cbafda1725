#!/usr/bin/env bash
# RNN-SPN Table 1 rows and the validation search on one GPU with the JAX
# backend, filling one time-limited call: the environment for
# benchmarks/rnn_spn_gpu_fill.py, which starts the training processes in
# stages while the GPU's throughput grows, stops them STOP_AFTER seconds after
# this script started, packs into OUT what the next call needs to continue,
# and runs the reports (see its docstring for the jobs, the settings and what
# comes back). From the repository root, a first call and a later one:
#
#   OUT=/some/dir DATA_DIR=.devdata/mnist STOP_AFTER=500 CALL_SECONDS=595 \
#       bash benchmarks/rnn_spn_paper_gpu.sh search
#   OUT=/some/dir DATA_DIR=.devdata/mnist STOP_AFTER=500 CALL_SECONDS=595 \
#       RESUME_DIR=.resume bash benchmarks/rnn_spn_paper_gpu.sh search
#
# (RESUME_DIR: every file the previous call left in OUT, copied into a folder
# that git ignores and that the call carries.) Jobs: search, search:K/N,
# MODEL[:D][:KEY=VALUE...], e.g. rnn_spn:3:dropout=0.3:dropout_placement=paper;
# without any, the three d = 2 rows (rnn_spn ffn_spn conv). The rows are
# variants of the configuration CONFIG (default rnn_spn/table1), the search is
# SEARCH_CONFIG (default rnn_spn/dropout_search); both run with run_study.py.
#
# Made for a GPU machine with JAX and CUDA, no TensorFlow and no network.
# DATA_DIR holds the four official MNIST IDX .gz files; .whl (optional) holds
# wheels the machine lacks (keras, namex, optree for Python 3.12), installed
# into /tmp/site. Bad settings are refused, one line each, before anything
# runs. With STOP_AFTER=0 every job trains to its end.
set -u
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${OUT:?set OUT to the output folder}
STOP_AFTER=${STOP_AFTER:-0}
case "$STOP_AFTER" in
  '' | *[!0-9]*)
    echo "STOP_AFTER must be a whole number of seconds (0: no limit). Received: '$STOP_AFTER'" >&2
    exit 2 ;;
esac
export OUT STOP_AFTER DATA_DIR=${DATA_DIR:-.devdata/mnist}
export RUNS_DIR=${RUNS_DIR:-runs/rnn_spn_paper_gpu}
# Every other setting is checked before anything is installed or written.
python3 benchmarks/rnn_spn_gpu_fill.py --check-only --started-at "$start" "$@" || exit 2

export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
if [ -d .whl ] && ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
# Many processes share the GPU: none takes 75 % of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export CRAM_KERAS_CACHE=${CRAM_KERAS_CACHE:-/tmp/cram_keras_cache}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), '| keras', keras.__version__)" || exit 1
# The sequences are generated once (and the jobs' settings checked) before
# the processes start.
exec python3 benchmarks/rnn_spn_gpu_fill.py --started-at "$start" "$@"
