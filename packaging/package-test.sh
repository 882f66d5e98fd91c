#!/usr/bin/env bash
# The Debian packages of one build: packaging/package-test.sh BUILD_DIR
#
#   1. cpack: moeatlas_<version>_<arch>.deb and moeatlas-gui_<version>_<arch>.deb into BUILD_DIR/packages
#      from the build as it is (no second build; binaries stripped on the way)
#   2. lintian (no errors allowed), desktop-file-validate and appstreamcli on what they cover
#   3. with CI=true or MOEATLAS_PACKAGE_INSTALL=1 only (it changes the system): apt-get install of both
#      packages, `moeatlas --version`, the demo pipeline from the installed programs on the installed
#      demo data into a temporary directory, the workbench offscreen for a few seconds, then apt-get purge
#      and a check that nothing is left (dpkg -L, /usr/share/moeatlas, the MIME type, the programs).
# Each step prints its time. Exit status: nonzero on the first failure.
set -euo pipefail

build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '\n== %s\n' "$*"; }
step_t0=$SECONDS
took() { printf -- '-- %s: %d s\n' "$1" $((SECONDS - step_t0)); step_t0=$SECONDS; }
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

version="$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")"
log "cpack: Debian packages of moeatlas $version from $build"
rm -rf "$build/packages"
(cd "$build" && cpack -G DEB >/dev/null)
mapfile -t debs < <(find "$build/packages" -maxdepth 1 -name "moeatlas*_${version}_*.deb" | sort)
((${#debs[@]})) || { echo "package-test: cpack wrote no .deb into $build/packages" >&2; exit 1; }
for deb in "${debs[@]}"; do
  printf '%s (%s KiB)\n' "$deb" "$(($(stat -c %s "$deb") / 1024))"
  dpkg-deb -f "$deb" Package Version Depends Recommends | sed 's/^/   /'
done
took "cpack"

log "lintian (errors fail; warnings are printed)"
lintian --fail-on error --tag-display-limit 0 "${debs[@]}"
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate "$root/packaging/share/org.moeatlas.Workbench.desktop"
fi
if command -v appstreamcli >/dev/null && [[ -f "$build/packaging/org.moeatlas.Workbench.metainfo.xml" ]]; then
  appstreamcli validate --no-net --pedantic "$build/packaging/org.moeatlas.Workbench.metainfo.xml"
fi
took "lintian"

if [[ "${CI:-}" != true && "${MOEATLAS_PACKAGE_INSTALL:-0}" != 1 ]]; then
  log "not installing the packages (CI=true or MOEATLAS_PACKAGE_INSTALL=1 does: apt-get install, demo, purge)"
  exit 0
fi
for p in moeatlas moeatlas-gui; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "package-test: $p is installed on this machine already; not touching it (remove it first)" >&2
    exit 1
  fi
done

log "apt-get install ${debs[*]##*/}"
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
took "install"
purged=0
purge() {
  ((purged)) && return 0
  purged=1
  log "apt-get purge moeatlas-gui moeatlas"
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get purge -y -qq moeatlas-gui moeatlas >/dev/null
}
trap purge EXIT

log "the installed programs"
hash -r
[[ "$(command -v moeatlas)" == /usr/bin/moeatlas ]] || { echo "package-test: moeatlas is not /usr/bin/moeatlas" >&2; exit 1; }
moeatlas --version
moeatlas --version | grep -qx "moeatlas $version" || { echo "package-test: --version does not say $version" >&2; exit 1; }
man -w moeatlas moeatlas-score moeatlas-gui
[[ -f /usr/share/bash-completion/completions/moeatlas ]]
bash -c 'source /usr/share/bash-completion/completions/moeatlas; COMP_WORDS=(moeatlas sco); COMP_CWORD=1; _moeatlas; [[ "${COMPREPLY[*]}" == score ]]'
# The MIME database (shared-mime-info's trigger) now knows *.atlas.h5.
if [[ -d /usr/share/mime/application ]]; then
  grep -q 'atlas.h5' /usr/share/mime/application/x-moeatlas-atlas.xml
fi
took "installed files"

tmp="$(mktemp -d)"
log "the demo pipeline: the installed run-demo.sh, /usr/bin/moeatlas on /usr/share/moeatlas/demo, into $tmp"
(cd "$tmp" && /usr/share/moeatlas/demo/run-demo.sh) >"$tmp/pipeline.log" 2>&1 ||
  { tail -n 40 "$tmp/pipeline.log"; echo "package-test: the demo pipeline failed" >&2; exit 1; }
grep '^== ' "$tmp/pipeline.log" | cut -c1-110
took "demo pipeline"

log "the workbench offscreen for 5 s on the demo atlas"
rc=0
QT_QPA_PLATFORM=offscreen timeout 5 /usr/bin/moeatlas-gui "$tmp/moeatlas-demo/demo.atlas.h5" >"$tmp/gui.log" 2>&1 || rc=$?
if [[ $rc -ne 124 ]]; then
  cat "$tmp/gui.log"
  echo "package-test: moeatlas-gui exited with status $rc before 5 s (expected it still running)" >&2
  exit 1
fi
took "workbench"
rm -rf "$tmp"

purge
trap - EXIT
log "nothing left behind"
left=0
for p in moeatlas moeatlas-gui; do
  if dpkg -L "$p" >/dev/null 2>&1; then echo "package-test: dpkg still lists files of $p" >&2; left=1; fi
done
for f in /usr/bin/moeatlas /usr/bin/moeatlas-gui /usr/share/moeatlas /usr/share/doc/moeatlas \
         /usr/share/applications/org.moeatlas.Workbench.desktop /usr/share/mime/packages/moeatlas.xml \
         /usr/share/mime/application/x-moeatlas-atlas.xml /usr/share/bash-completion/completions/moeatlas; do
  if [[ -e "$f" ]]; then echo "package-test: left behind: $f" >&2; left=1; fi
done
((left == 0)) && echo "none"
took "purge"
exit "$left"
