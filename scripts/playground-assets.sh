#!/usr/bin/env bash
# Refreshes the GraphQL playground's third-party files (GraphiQL, React, React DOM) from the npm
# registry into graph/server/playground/, where go:embed puts them in the binary, and writes
# their versions and SHA-256 checksums to graph/server/playground/VERSIONS (committed; a Go
# test checks the embedded files against it). Change the pinned versions here, run
# `make playground-assets`, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."

GRAPHIQL_VERSION=3.8.3 # 3.x ships a UMD build (graphiql.min.js) that runs on React 18's UMD build
REACT_VERSION=18.3.1   # React 19 has no UMD build
dest=graph/server/playground

command -v npm >/dev/null || { echo "playground-assets: npm is required (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "graphiql@$GRAPHIQL_VERSION" "react@$REACT_VERSION" "react-dom@$REACT_VERSION" >/dev/null)

# package@version  file in the package  name served under /playground/
files=(
  "graphiql@$GRAPHIQL_VERSION graphiql.min.js graphiql.min.js"
  "graphiql@$GRAPHIQL_VERSION graphiql.min.css graphiql.min.css"
  "react@$REACT_VERSION umd/react.production.min.js react.production.min.js"
  "react-dom@$REACT_VERSION umd/react-dom.production.min.js react-dom.production.min.js"
)
{
  echo "# The playground's third-party files: name, npm package@version, sha256."
  echo "# Written by scripts/playground-assets.sh (make playground-assets); do not edit."
} >"$tmp/VERSIONS"
for f in "${files[@]}"; do
  read -r pkg src name <<<"$f"
  tgz="$tmp/$(echo "${pkg%@*}" | tr -d '@' | tr '/' '-')-${pkg##*@}.tgz"
  tar -xzf "$tgz" -C "$tmp" "package/$src"
  # Drop the source map reference: the map is not shipped, and browsers would ask for it.
  sed -e '/^\/\/# sourceMappingURL=/d' -e 's#/\*\# sourceMappingURL=[^*]*\*/##' "$tmp/package/$src" >"$dest/$name"
  rm -f "$tmp/package/$src"
  echo "$name $pkg $(sha256sum "$dest/$name" | cut -d' ' -f1)" >>"$tmp/VERSIONS"
done
mv "$tmp/VERSIONS" "$dest/VERSIONS"
cat "$dest/VERSIONS"
