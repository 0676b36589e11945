#!/usr/bin/env bash
# The committed viewer bundle (primaa/web/static) must equal a fresh build of web/.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent
git diff --exit-code -- ../primaa/web/static
untracked=$(git ls-files --others --exclude-standard -- ../primaa/web/static)
if [ -n "$untracked" ]; then
  echo "built files not committed: $untracked" >&2
  exit 1
fi
echo "the committed viewer bundle matches a fresh build"
