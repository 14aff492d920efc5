#!/usr/bin/env bash
# Fails when code includes a header from above it in the stack. src/<folder>/ may include its own
# folder and the folders before it in RANKS (src/CMakeLists.txt builds one library per folder in this
# order); public headers in include/espresso/ may include only each other, and tools/ only those.
# Usage: scripts/check_layering.sh [ROOT]   (ROOT: a checkout, default this one)
set -euo pipefail
root=${1:-"$(dirname "$0")/.."}
ranks=(core graph layers backends data esp runtime import export models train store serve capi)

rank_of() {
  local i
  for i in "${!ranks[@]}"; do
    [ "${ranks[$i]}" = "$1" ] && { echo "$i"; return; }
  done
  echo -1
}

violations=0
while IFS= read -r file; do
  relative=${file#"$root"/}
  folder=${relative#src/}
  folder=${folder%%/*}
  own=$(rank_of "$folder")
  while IFS=: read -r line included; do
    target=${included%%/*}
    theirs=$(rank_of "$target")
    if [ "$theirs" -gt "$own" ]; then
      echo "$relative:$line: includes \"$included\": $folder may not depend on $target (above it in the stack)"
      violations=$((violations + 1))
    fi
  done < <(grep -noE '^#include "[a-z_]+/[^"]+"' "$file" | sed -E 's/^([0-9]+):#include "([^"]+)"/\1:\2/')
done < <(find "$root/src" -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) | sort)

while IFS= read -r file; do
  while IFS= read -r included; do
    echo "${file#"$root"/}: includes \"$included\": public headers may include only espresso/ headers"
    violations=$((violations + 1))
  done < <(grep -oE '^#include "[^"]+"' "$file" | sed -E 's/#include "([^"]+)"/\1/' | grep -v '^espresso/' || true)
done < <(find "$root/include" -type f -name '*.h' | sort)

# The CLI is a user of the library like any other: public headers and its own files only.
while IFS= read -r file; do
  while IFS= read -r included; do
    echo "${file#"$root"/}: includes \"$included\": tools use the public API (include/espresso/) only"
    violations=$((violations + 1))
  done < <(grep -oE '^#include "[a-z_]+/[^"]+"' "$file" | sed -E 's/#include "([^"]+)"/\1/' | grep -v '^espresso/' || true)
done < <(find "$root/tools" -type f \( -name '*.h' -o -name '*.cpp' \) 2>/dev/null | sort)

if [ "$violations" -gt 0 ]; then
  echo "layering: $violations include(s) climb the stack (${ranks[*]})" >&2
  exit 1
fi
echo "layering: ok (${ranks[*]})"
