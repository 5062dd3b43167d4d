#!/usr/bin/env bash
# Seeds the fuzz corpus with every distinct captured payload from proto/fixtures/*.hex.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus/decode"
mkdir -p "$corpus"
cat "$here"/../fixtures/*.hex | cut -d' ' -f2 | sort -u | while read -r hex; do
    printf '%s' "$hex" | xxd -r -p >"$corpus/$(printf '%s' "$hex" | sha1sum | cut -c1-40)"
done
echo "$(ls "$corpus" | wc -l) files in $corpus"
