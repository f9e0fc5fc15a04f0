#!/usr/bin/env bash
# A dataset folder that lists the training corpus and the devset together, for leave-one-source-out
# figures over both (`livecheck eval DIR/manifest.csv --group-by source_repo --calibrate ...`). The
# images stay where they are: OUT gets symlinks (live/, spoof/ of the corpus; devset/) and a
# manifest with the columns eval reads; devset sources are prefixed `devset:` so no source name can
# collide. The devset is only ever validation data: never ship a fit made on this folder.
#
#   bash training/combined-manifest.sh /work/corpus ../shared/testdata/devset /tmp/combined
set -euo pipefail
corpus=$(cd "$1" && pwd); devset=$(cd "$2" && pwd); out=$3
mkdir -p "$out"
ln -sfn "$corpus/live" "$out/live"
ln -sfn "$corpus/spoof" "$out/spoof"
ln -sfn "$devset" "$out/devset"
# The first four columns of both manifests are file,label,attack_type,source_repo, none quoted.
{
  echo "file,label,attack_type,source_repo"
  tail -n +2 "$corpus/manifest.csv" | cut -d, -f1-4
  tail -n +2 "$devset/manifest.csv" | awk -F, -v OFS=, '{ print "devset/" $1, $2, $3, "devset:" $4 }'
} > "$out/manifest.csv"
echo "$(($(wc -l < "$out/manifest.csv") - 1)) images in $out/manifest.csv"
