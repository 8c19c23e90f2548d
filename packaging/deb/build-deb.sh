#!/bin/bash
# Build the dkms-hooks .deb with plain dpkg-deb, no debhelper:
#   packaging/deb/build-deb.sh [OUTDIR]        -> OUTDIR/dkms-hooks_<version>-1_all.deb
# `make install DISTRO=debian` fills a staging root; the control area gets the dpkg file
# trigger and maintainer scripts from hooks/dpkg/. The package replaces Debian's dkms
# (Provides/Conflicts/Replaces) and takes over its /etc/kernel/*.d/dkms hooks.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(mkdir -p "${1:-.}" && cd "${1:-.}" && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
UPSTREAM=$(sed -n 's/^UPSTREAM_RELEASE = "dkms-\(.*\)"/\1/p' dkms_hooks/__init__.py)
STAGE=$(mktemp -d)
chmod 0755 "$STAGE"
trap 'rm -rf "$STAGE"' EXIT

make -s install DESTDIR="$STAGE" DISTRO=debian PREFIX=/usr
install -d "$STAGE/var/lib/dkms" "$STAGE/usr/share/doc/dkms-hooks"
gzip -9n "$STAGE/usr/share/man/man8/dkms.8"
cat > "$STAGE/usr/share/doc/dkms-hooks/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: dkms-hooks

Files: *
Copyright: 2026 dkms-hooks authors
License: GPL-2+
 On Debian systems, the full text of the GNU General Public License version 2
 can be found in /usr/share/common-licenses/GPL-2.
COPYRIGHT

install -d "$STAGE/DEBIAN"
install -m 0644 hooks/dpkg/triggers "$STAGE/DEBIAN/triggers"
install -m 0755 hooks/dpkg/postinst hooks/dpkg/prerm "$STAGE/DEBIAN/"
(cd "$STAGE" && find etc -type f -printf '/%p\n' | LC_ALL=C sort) > "$STAGE/DEBIAN/conffiles"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    > "$STAGE/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: dkms-hooks
Version: $VERSION-1
Architecture: all
Maintainer: dkms-hooks authors <dkms-hooks@example.invalid>
Installed-Size: $size
Depends: python3 (>= 3.9), python3-pluggy (>= 0.13), kmod, gcc | c-compiler, make | build-essential, patch
Recommends: openssl, xz-utils, zstd, python3 (>= 3.11) | python3-tomli
Provides: dkms (= $UPSTREAM)
Conflicts: dkms
Replaces: dkms
Section: kernel
Priority: optional
Multi-Arch: foreign
Description: drop-in dkms with parallel, crash-safe rebuilds and distro hooks
 A replacement for DKMS (Dynamic Kernel Module Support): the same dkms command,
 dkms.conf, tree layout and messages, so module packages keep working. Rebuilds
 for new kernels run in parallel in one job budget, a failing module never
 stops the others, and depmod and the initramfs run once per kernel.
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT/dkms-hooks_${VERSION}-1_all.deb" >/dev/null
echo "$OUT/dkms-hooks_${VERSION}-1_all.deb"
