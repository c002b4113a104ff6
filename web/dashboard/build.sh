#!/usr/bin/env bash
# Build web/dashboard into dist/ (served by the gateway at /dashboard/) when its sources or
# docs/openapi.yaml changed since the last build. Needs Node.js >= 20.19 (current Vite).
# DASHBOARD_OPTIONAL=1 (make up): without Node, warn and carry on; the API works without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

missing() {
  echo "dashboard: $1. Node.js >= 20.19 is needed to build the dashboard (web/dashboard);" \
       "install it (e.g. from the NodeSource or nodejs.org packages; Debian's own is older)." >&2
  if [ "${DASHBOARD_OPTIONAL:-0}" = 1 ]; then
    echo "dashboard: skipped; /dashboard/ answers 503 until it is built." >&2
    exit 0
  fi
  exit 1
}
command -v node >/dev/null 2>&1 || missing "node was not found on PATH"
version=$(node -p 'process.versions.node')
IFS=. read -r major minor _ <<<"$version"
if [ "$major" -lt 20 ] || { [ "$major" -eq 20 ] && [ "$minor" -lt 19 ]; }; then
  missing "node $version is too old"
fi

stamp=dist/.build-stamp
inputs=(src index.html package.json package-lock.json vite.config.ts tsconfig.json ../../docs/openapi.yaml)
if [ -f "$stamp" ] && [ -z "$(find "${inputs[@]}" -newer "$stamp" -not -name schema.d.ts -print -quit)" ]; then
  echo "dashboard: up to date (web/dashboard/dist; make up serves it at http://127.0.0.1:8000/dashboard/)"
  exit 0
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
touch "$stamp"
echo "dashboard: built web/dashboard/dist; the gateway serves it at /dashboard/ (make up: http://127.0.0.1:8000/dashboard/)"
