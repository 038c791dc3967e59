#!/usr/bin/env bash
# `make dist`: the release tarball, from the compiled Lua in dist/lua (tools/build.sh; this script does not build).
#
#   scripts/dist.sh [OUTDIR]        (default dist/) writes OUTDIR/dyups-VERSION.tar.gz and, beside it,
#                                   OUTDIR/dyups-VERSION-1.rockspec (what scripts/rock.sh packs); prints the tarball
#
# The tarball holds one folder, dyups-VERSION/:
#   lib/dyups/..., lib/ngx/dyups.lua   the compiled Lua (lua_package_path ".../lib/?.lua;.../lib/?/init.lua;;")
#   nginx/dyups.conf                   the snippet to include at http {} level
#   nginx/dyups-http.conf, dyups-location.conf   the per-location form (README, "The per-location form")
#   install.sh                         scripts/install.sh: installs under PREFIX (make install uses it too)
#   dyups-VERSION-1.rockspec           rockspec/dyups.rockspec.in rendered (luarocks make works in the folder)
#   README.md LICENSE CHANGELOG.md
# Nothing in it needs Node. VERSION is the one in the compiled Lua (dist/lua/dyups/version.lua, from package.json).
# The archive is reproducible: sorted names, owner 0, mtime of the last commit (SOURCE_DATE_EPOCH when set).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

die() { echo "dist: ERROR: $*" >&2; exit 1; }
[ -f dist/lua/dyups/init.lua ] && [ -f dist/lua/dyups/version.lua ] || die "dist/lua is not built (run tools/build.sh)"
VERSION=$(sed -n 's/.*VERSION = "\([^"]*\)".*/\1/p' dist/lua/dyups/version.lua)
[ -n "$VERSION" ] || die "no VERSION in dist/lua/dyups/version.lua"
NAME=dyups-$VERSION

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
d=$stage/$NAME
mkdir -p "$d/lib" "$d/nginx"
cp -R dist/lua/. "$d/lib/"
cp nginx/dyups.conf nginx/dyups-http.conf nginx/dyups-location.conf "$d/nginx/"
cp README.md LICENSE CHANGELOG.md "$d/"
cp scripts/install.sh "$d/install.sh"
chmod 0755 "$d/install.sh"

# only Lua under lib/ (a stray .ts, .map or node file would mean the build leaked something)
stray=$(cd "$d/lib" && find . -type f ! -name '*.lua')
[ -z "$stray" ] || die "non-Lua files in dist/lua: $stray"

# the rockspec: every module under lib/ ("dyups/init.lua" is the module "dyups")
modules=$(cd "$d/lib" && find . -type f -name '*.lua' | sed 's|^\./||' | LC_ALL=C sort | awk '{
  m = $0; sub(/\.lua$/, "", m); sub(/\/init$/, "", m); gsub(/\//, ".", m)
  printf "      [\"%s\"] = \"lib/%s\",\n", m, $0 }')
awk -v version="$VERSION" -v modules="$modules" '
  /^@MODULES@$/ { printf "%s\n", modules; next }
  { gsub(/@VERSION@/, version); print }
' rockspec/dyups.rockspec.in >"$d/$NAME-1.rockspec"
! grep -n '@[A-Z]*@' "$d/$NAME-1.rockspec" || die "unrendered placeholder in the rockspec"
cp "$d/$NAME-1.rockspec" "$OUT/$NAME-1.rockspec"

epoch=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
find "$d" -type d -exec chmod 0755 {} +
find "$d" -type f ! -name install.sh -exec chmod 0644 {} +
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$stage" -cf - "$NAME" \
  | gzip -n -9 >"$OUT/$NAME.tar.gz.tmp"
mv "$OUT/$NAME.tar.gz.tmp" "$OUT/$NAME.tar.gz"
echo "dist: $OUT/$NAME.tar.gz ($(find "$d/lib" -name '*.lua' | wc -l) Lua files, $(du -k "$OUT/$NAME.tar.gz" | cut -f1) KB)" >&2
echo "$OUT/$NAME.tar.gz"
