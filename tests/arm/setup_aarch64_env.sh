#!/usr/bin/env bash
# An aarch64 CPython 3.11 with the worker's packages, run under qemu-user on an x86 host.
#
# Prints the path of `python-aarch64`, a wrapper that starts the aarch64 interpreter under
# qemu-aarch64-static. What it needs from the network, fetched once and cached:
#   * Debian bookworm arm64 packages of python3.11 and the C/C++ runtime (apt-get with a
#     private state dir: no `dpkg --add-architecture`, no root, nothing installed on the host),
#     unpacked with `dpkg -x` into a sysroot;
#   * aarch64 wheels from PyPI (aarch64-requirements.txt), installed into the sysroot's
#     dist-packages by the host's pip (--platform ... --only-binary=:all:).
# The wrapper passes itself as argv[0] (qemu -0), so the interpreter's sys.executable is the
# wrapper and the worker's sandbox subprocesses start under qemu too, without binfmt_misc.
#
# Cache: $TUNEHUB_AARCH64_CACHE (default ~/.cache/tunehub-aarch64); a stamp holding the hash of
# this script and the requirements makes a second run a no-op. Exit status 2 means the
# environment cannot be set up here (no qemu, no apt-get/dpkg, no network); the reason is on stderr.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${TUNEHUB_AARCH64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tunehub-aarch64}"
PY="${TUNEHUB_HOST_PYTHON:-python3}"  # the host Python whose pip fetches the wheels
QEMU="$(command -v qemu-aarch64-static || true)"
SUITE="bookworm"
DEBS="python3.11 libstdc++6"

cannot() { echo "cannot set up the aarch64 environment: $*" >&2; exit 2; }
[ -n "$QEMU" ] || cannot "qemu-aarch64-static is not installed (apt-get install qemu-user-static)"
command -v apt-get >/dev/null && command -v dpkg >/dev/null || cannot "apt-get and dpkg are needed to fetch Debian arm64 packages"
# TVM links each built kernel into a .so with the C compiler; under emulation the aarch64 compiler
# is the host's cross gcc, which runs natively (an emulated gcc would take minutes per kernel).
command -v aarch64-linux-gnu-gcc >/dev/null || cannot "aarch64-linux-gnu-gcc is not installed (apt-get install gcc-aarch64-linux-gnu)"

STAMP_WANT="$(cat "$0" "$HERE/aarch64-requirements.txt" | sha256sum | cut -c1-16)"
WRAPPER="$CACHE/sysroot/usr/bin/python-aarch64"
if [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$STAMP_WANT" ] && [ -x "$WRAPPER" ]; then
  echo "$WRAPPER"
  exit 0
fi

# Build beside the cache and swap it in at the end, so a failed run never leaves half a sysroot.
NEW="$CACHE.new.$$"
rm -rf "$NEW"
trap 'rm -rf "$NEW"' EXIT
mkdir -p "$NEW/apt/state/lists/partial" "$NEW/apt/cache/archives/partial" "$NEW/sysroot"
touch "$NEW/apt/status"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$NEW/apt/sources.list" <<SOURCES
deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian $SUITE main
deb [arch=arm64 signed-by=$KEYRING] http://deb.debian.org/debian-security $SUITE-security main
SOURCES
APT=(apt-get -q -o "Dir::State=$NEW/apt/state" -o "Dir::State::status=$NEW/apt/status"
     -o "Dir::Cache=$NEW/apt/cache" -o "Dir::Etc::SourceList=$NEW/apt/sources.list"
     -o "Dir::Etc::SourceParts=$NEW/apt/none" -o "APT::Architecture=arm64" -o "APT::Architectures::=arm64"
     -o "APT::Sandbox::User=root")
"${APT[@]}" update >"$NEW/apt.log" 2>&1 || cannot "apt-get update for arm64 failed (no network to deb.debian.org?): $(tail -3 "$NEW/apt.log")"
# An empty dpkg status: apt resolves the whole closure (libc6 included) into the download.
"${APT[@]}" install -y -d --no-install-recommends $DEBS >>"$NEW/apt.log" 2>&1 \
  || cannot "apt-get could not download $DEBS for arm64: $(tail -3 "$NEW/apt.log")"
for deb in "$NEW"/apt/cache/archives/*.deb; do dpkg -x "$deb" "$NEW/sysroot"; done

# The sysroot's own site dirs must exist: qemu -L falls back to the host's path for a missing one,
# and the host's x86 packages must never be imported by the aarch64 interpreter.
SITE="$NEW/sysroot/usr/lib/python3/dist-packages"
mkdir -p "$SITE" "$NEW/sysroot/usr/local/lib/python3.11/dist-packages"
"$PY" -m pip download -q --dest "$NEW/wheels" --only-binary=:all: --python-version 3.11 --implementation cp \
  --abi cp311 --abi abi3 --abi none --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  -r "$HERE/aarch64-requirements.txt" >"$NEW/pip.log" 2>&1 \
  || cannot "pip could not download the aarch64 wheels (no network to the package index?): $(tail -3 "$NEW/pip.log")"
"$PY" -m pip install -q --no-deps --no-index --target "$SITE" --only-binary=:all: --python-version 3.11 \
  --implementation cp --abi cp311 --abi abi3 --abi none --platform manylinux_2_28_aarch64 \
  --platform manylinux2014_aarch64 "$NEW"/wheels/*.whl >>"$NEW/pip.log" 2>&1 \
  || { echo "pip install --target failed: $(tail -5 "$NEW/pip.log")" >&2; exit 1; }
rm -rf "$NEW/wheels" "$NEW/apt/cache"

cat > "$NEW/sysroot/usr/bin/python-aarch64" <<'WRAP'
#!/bin/sh
# aarch64 CPython under qemu-user (tests/arm/setup_aarch64_env.sh). -0 "$0": sys.executable is this
# wrapper, so subprocesses of the interpreter start emulated too. CC: TVM's export_library links
# with it; the host's cross gcc is this emulated machine's native compiler.
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export CC="${CC:-aarch64-linux-gnu-gcc}"
exec QEMU_PATH -L "$ROOT" -0 "$0" "$ROOT/usr/bin/python3.11" "$@"
WRAP
sed -i "s|QEMU_PATH|$QEMU|" "$NEW/sysroot/usr/bin/python-aarch64"
chmod +x "$NEW/sysroot/usr/bin/python-aarch64"
"$NEW/sysroot/usr/bin/python-aarch64" -c "import platform, tvm; assert platform.machine() == 'aarch64', platform.machine()" \
  || { echo "the aarch64 interpreter does not start or cannot import tvm" >&2; exit 1; }

echo "$STAMP_WANT" > "$NEW/stamp"
rm -rf "$CACHE"
mkdir -p "$(dirname "$CACHE")"
mv "$NEW" "$CACHE"
trap - EXIT
echo "$CACHE/sysroot/usr/bin/python-aarch64"
