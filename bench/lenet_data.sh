# Sourced by the LeNet training benches on the GPU machine, from the repo root: sets $out ($OUT, made),
# $espresso (the bundle's CLI), $data ($ESPRESSO_DATA, the shared data) and $work (a temporary folder,
# removed at exit), and lays out Caffe's own LeNet solver and net with the MNIST LMDBs `espresso
# convert-data` builds from the IDX files under $work/examples/mnist, as the solver expects them.
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
eval "$(scripts/gpu_check.sh env)"
espresso=$ESPRESSO_CLI
data=${ESPRESSO_DATA:?carry the shared data subset}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/examples/mnist"
cp "$data/caffe/lenet/v2_format/lenet_solver.prototxt" "$data/caffe/lenet/v2_format/lenet_train_test.prototxt" \
  "$work/examples/mnist/"
"$espresso" convert-data --format idx "$data/mnist" "$work/examples/mnist/mnist_train_lmdb" --split train >/dev/null
"$espresso" convert-data --format idx "$data/mnist" "$work/examples/mnist/mnist_test_lmdb" --split test >/dev/null
