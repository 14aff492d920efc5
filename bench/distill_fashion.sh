#!/bin/bash
# One run of the distillation benchmark (bench/results/2026-12-05-distillation-fashion.md, docs/distillation.md):
#   bench/distill_fashion.sh alone SEED                      the NIN student trained alone on the labels
#   bench/distill_fashion.sh distill SEED T ALPHA TEACHER    the same student distilled from TEACHER (a caffemodel
#                                                            of examples/compress/fashion_deploy.prototxt)
# Both use examples/distill/'s solver settings with random_seed SEED; files go to $OUT (default /tmp/distill).
# Prints the test accuracy line of the final test (10,000 Fashion-MNIST test images). Run from the repository root.
set -euo pipefail
mode=$1 seed=$2
out=${OUT:-/tmp/distill}
espresso=${ESPRESSO:-build/bin/espresso}
mkdir -p "$out"
if [ "$mode" = alone ]; then
  tag=alone_s$seed
  net=examples/distill/student_train_test.prototxt
  solver=examples/distill/student_solver.prototxt
  extra=()
else
  temperature=$3 alpha=$4 teacher=$5
  tag=distill_T${temperature}_a${alpha}_s$seed
  net=$out/$tag.prototxt
  sed "s/distillation_loss_param { .* }/distillation_loss_param { temperature: $temperature alpha: $alpha }/" \
    examples/distill/student_distill_train_test.prototxt > "$net"
  solver=examples/distill/student_distill_solver.prototxt
  extra=(--teacher "examples/compress/fashion_deploy.prototxt,$teacher" --teacher-output ip2)
fi
sed -e "s|^net: .*|net: \"$net\"|" -e "s|^random_seed: .*|random_seed: $seed|" \
    -e "s|^snapshot_prefix: .*|snapshot_prefix: \"$out/$tag\"|" "$solver" > "$out/${tag}_solver.prototxt"
"$espresso" train "$out/${tag}_solver.prototxt" --threads 1 "${extra[@]}" > "$out/$tag.log" 2>&1
echo "$tag $(grep 'Test net output #0: accuracy' "$out/$tag.log" | tail -1)"
