#!/usr/bin/env bash
# The main job on the embedded local store: version a dataset, mount it, change it, commit.
# Run through `make demo`. Uses the default store (~/.local/share/fsmount/store) and cache.
set -euo pipefail

work=$(mktemp -d /tmp/fsmount-demo.XXXXXX)
mnt="$work/mnt"
cleanup() {
  if mountpoint -q "$mnt" 2>/dev/null; then fsmount umount "$mnt" || fusermount3 -uz "$mnt" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

project="demo-$(date +%Y%m%d-%H%M%S)"
step "A dataset of images and labels (made up on the spot in $work/data)"
mkdir -p "$work/data/images" "$work/data/labels"
for i in $(seq -w 1 20); do
  head -c $((20000 + RANDOM)) /dev/urandom > "$work/data/images/img$i.jpg"
  echo "img$i.jpg,$((RANDOM % 10))" > "$work/data/labels/img$i.csv"
done
head -c $((24 * 1024 * 1024)) /dev/urandom > "$work/data/features.bin"
ls -R "$work/data" | head -8; echo "..."

step "fsmount sync: version 1 (create + upload + finalize in one go)"
v1=$(fsmount sync --folder "$work/data" --project "$project" --name images --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "v1 = $v1"

step "Version 2: drop 3 bad images, add 4 new ones (only the change-set is stored)"
fsmount create --project "$project" --name images --parent "$v1"
mkdir -p "$work/new"
for i in 21 22 23 24; do head -c 30000 /dev/urandom > "$work/new/img$i.jpg"; done
fsmount add "$work/new" --dataset-folder images
fsmount remove 'images/img0[1-3].jpg'
fsmount close -m "drop 3 bad images, add 4"
fsmount info "$project/images"

step "fsmount list / diff"
fsmount list --project "$project"
fsmount diff "$v1" "$project/images"

if [ -e /dev/fuse ] && fsmount mount --help >/dev/null 2>&1; then
  step "fsmount mount: the merged tree of v2 + v1, read lazily through the cache"
  mkdir -p "$mnt"
  fsmount mount "$project/images" "$mnt"
  ls "$mnt" "$mnt/images" | head -12
  echo "files: $(find "$mnt" -type f | wc -l)"
  sha256sum "$mnt/features.bin" "$work/data/features.bin"
  python3 - "$mnt" <<'PY'
import os, sys
root = sys.argv[1]
total = 0
for d, _, files in os.walk(root):
    for f in files:
        with open(os.path.join(d, f), "rb") as fh:
            total += len(fh.read())
print(f"python read {total} bytes from {root}, fetched on first use")
PY
  fsmount status "$mnt" || true
  fsmount umount "$mnt"

  step "fsmount mount --write: fix labels, delete an image, add one; then commit v3 from the mount"
  fsmount mount "$project/images" "$mnt" --write --overlay "$work/overlay"
  echo "img04.jpg,7" > "$mnt/labels/img04.csv"
  rm "$mnt/images/img05.jpg"
  head -c 40000 /dev/urandom > "$mnt/images/img25.jpg"
  fsmount diff "$mnt"
  v3=$(fsmount commit "$mnt" -m "fix a label, drop img05, add img25" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  echo "v3 = $v3 (the mount now stands on it, with an empty overlay)"
  fsmount status "$mnt"
  fsmount umount "$mnt"
  fsmount info "$v3" | sed -n '1,/^lineage/p'
fi

step "fsmount get: a read-only local copy through the cache (a second get downloads nothing)"
path=$(fsmount get "$project/images")
echo "$path"; ls "$path"
fsmount verify "$project/images"
echo; echo "Demo done: project $project lives in the default store; 'fsmount list' shows it."
