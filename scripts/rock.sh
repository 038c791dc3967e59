#!/usr/bin/env bash
# `make rock`: the LuaRocks packages, from the release tarball of scripts/dist.sh (it holds the rockspec).
#
#   scripts/rock.sh dist/dyups-VERSION.tar.gz   writes, beside the tarball,
#     dyups-VERSION-1.src.rock   the rockspec + the tarball (LuaRocks' source rock format: a zip of the two);
#                                `luarocks install` builds it with the builtin backend (copies Lua: no compiler)
#     dyups-VERSION-1.all.rock   the installed files: that .src.rock installed into a scratch tree, then
#                                `luarocks pack`ed. `luarocks --lua-version=5.1 install dyups-VERSION-1.all.rock`
#                                needs no network, no Node and no compiler.
#   env LUAROCKS (default: luarocks --lua-version=5.1; Debian's luarocks otherwise picks the newest Lua installed)
# Needs luarocks (Debian's: scripts/install-deps.sh --rock) and zip (a dependency of Debian's luarocks).
set -euo pipefail
die() { echo "rock: ERROR: $*" >&2; exit 1; }

tarball=${1:-}
[ -n "$tarball" ] && [ -f "$tarball" ] || die "usage: $0 dist/dyups-VERSION.tar.gz (make dist writes it)"
out=$(cd "$(dirname "$tarball")" && pwd)
file=$(basename "$tarball")
name=${file%.tar.gz}                       # dyups-VERSION
version=${name#dyups-}
[[ "$name" == dyups-* && "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a dyups release tarball: $file"
rockspec=$name-1.rockspec
read -r -a LR <<<"${LUAROCKS:-luarocks --lua-version=5.1}"
command -v "${LR[0]}" >/dev/null 2>&1 || die "${LR[0]} is not installed (scripts/install-deps.sh --rock)"
command -v zip >/dev/null 2>&1 || die "zip is not installed"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the rockspec from the tarball itself, so the rock and the tarball cannot disagree
tar -xzf "$tarball" -C "$work" "$name/$rockspec" || die "$file has no $name/$rockspec"
cp "$work/$name/$rockspec" "$work/$rockspec"
cp "$tarball" "$work/$file"

# .src.rock: exactly what `luarocks pack ROCKSPEC` writes (the rockspec and the source archive, zipped), without
# its download step: the rockspec's url is the tarball's own name, relative to the rockspec
rm -f "$out/$name-1.src.rock" "$out/$name-1.all.rock"
(cd "$work" && zip -q -X "$name-1.src.rock" "$rockspec" "$file")
"${LR[@]}" lint "$work/$rockspec" || die "luarocks lint failed on $rockspec"

# .all.rock: install the .src.rock into a scratch tree (the real build), then pack the installed rock
(cd "$work" && "${LR[@]}" --tree "$work/tree" install --deps-mode=none "$name-1.src.rock" >"$work/install.log" 2>&1) \
  || { cat "$work/install.log" >&2; die "the .src.rock did not install"; }
(cd "$work" && "${LR[@]}" --tree "$work/tree" pack dyups "$version-1" >"$work/pack.log" 2>&1) \
  || { cat "$work/pack.log" >&2; die "luarocks pack failed"; }
[ -f "$work/$name-1.all.rock" ] || { cat "$work/pack.log" >&2; die "luarocks pack wrote no $name-1.all.rock"; }
mv "$work/$name-1.src.rock" "$work/$name-1.all.rock" "$out/"
echo "rock: $out/$name-1.src.rock, $out/$name-1.all.rock" >&2
echo "$out/$name-1.src.rock"
echo "$out/$name-1.all.rock"
