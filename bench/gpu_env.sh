# Sourced, at the repository root of a lent GPU machine, by bench/gpu_run.sh and bench/loso_sweep.sh:
# installs the wheels of .whl/ (bench/gpu_prepare.sh) under /tmp/site unless NO_WHEELS is set or
# there are none, puts them and the repository on PYTHONPATH, and sends cnncli's cache and
# matplotlib's settings where any user may write, whatever HOME is there.
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export CNNCLI_CACHE_DIR=${CNNCLI_CACHE_DIR:-/tmp/cnncli-cache} MPLCONFIGDIR=${MPLCONFIGDIR:-/tmp/matplotlib}
if [ -z "${NO_WHEELS:-}" ] && compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
