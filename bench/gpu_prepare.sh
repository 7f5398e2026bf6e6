#!/usr/bin/env bash
# Prepares, at the repository root, what bench/gpu_run.sh needs on a GPU machine that has torch but
# neither the data nor all of cnncli's dependencies (both folders are git-ignored; pass them as the
# run's carry): .gpudata/ (Fashion-MNIST's four idx files, FSDD's recordings; about 51 MiB) and
# .whl/ (soundfile with its libsndfile, and cffi and pycparser under it, for CPython 3.12 on
# x86_64 Linux; the training paths import nothing else the machine lacks: librosa only draws
# spectrogram axes and reads odd mp3s). Run it on the development machine:  bash bench/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
FSDD=${FSDD:-../shared/data/fsdd/recordings}
PYTHON=${PYTHON:-python3}

mkdir -p .gpudata/fashion-mnist .gpudata/fsdd/recordings
cp "$FASHION"/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz .gpudata/fashion-mnist/
cp "$FSDD"/*.wav .gpudata/fsdd/recordings/
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
du -sh .gpudata .whl
