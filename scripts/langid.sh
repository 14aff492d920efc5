#!/bin/bash
# Language identification on Debian's fortune packages (docs/sequence.md): builds the data set, converts
# it to LMDBs of character indices, trains the character-level CNN and the LSTM of examples/langid/ with
# `espresso train`, and classifies a few sentences. Run from the repository root after building.
#   scripts/langid.sh [--device cuda:0] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
ESPRESSO=${ESPRESSO:-build/bin/espresso}
OUT=build/langid
rm -rf "$OUT/train_lmdb" "$OUT/test_lmdb"
scripts/make_fortune_dataset.py "$OUT"
"$ESPRESSO" convert-data --format text "$OUT/train.tsv" "$OUT/train_lmdb" --max-vocabulary 160
"$ESPRESSO" convert-data --format text "$OUT/test.tsv" "$OUT/test_lmdb" --like "$OUT/train_lmdb"
for model in charcnn lstm; do
  "$ESPRESSO" train "examples/langid/${model}_solver.prototxt" "$@" 2>&1 | tee "$OUT/${model}_train.log"
  "$ESPRESSO" classify-text "examples/langid/${model}_deploy.prototxt" -w "$OUT/${model}_iter_1500.caffemodel" \
      --vocab "$OUT/train_lmdb" --test "$OUT/test.tsv" | tee "$OUT/${model}_confusion.txt"
  "$ESPRESSO" classify-text "examples/langid/${model}_deploy.prototxt" -w "$OUT/${model}_iter_1500.caffemodel" \
      --vocab "$OUT/train_lmdb" --top 1 \
      "The quick brown fox jumps over the lazy dog." "Der schnelle braune Fuchs springt über den faulen Hund." \
      "El rápido zorro marrón salta sobre el perro perezoso." "La volpe veloce salta sopra il cane pigro." \
      "Szybki brązowy lis przeskakuje nad leniwym psem." "Rychlá hnědá liška skáče přes líného psa." \
      "La rapida bruna vulpo saltas super la mallaboran hundon."
done
