# Source me as root inside `unshare --mount --propagation private`: root_up NAME REPO [DIR...]
# mounts a copy-on-write overlay (upper layer on tmpfs) of the cached root NAME
# (scripts/make-root), with /proc, /sys, /dev, the checkout REPO (read-only) and each DIR at
# the same paths inside, and puts a dkms command on its PATH that runs the checkout with the
# root's own python3. Every write vanishes with the namespace; the cached root stays
# pristine. Then: chroot "$ROOT" ...
root_up() {
    local name=$1 repo=$2 lower=${DKMS_HOOKS_ROOTS:-/var/cache/dkms-hooks/roots}/$1
    shift 2
    [ -f "$lower/.dkms-hooks-root" ] || { echo "no cached root $lower (scripts/make-root $name)" >&2; exit 98; }
    ROOT_BASE=$(mktemp -d /tmp/dkms-hooks-root.XXXXXX)
    mount -t tmpfs -o size="${ROOT_SIZE:-4g}" dkms-hooks-root "$ROOT_BASE"
    mkdir -p "$ROOT_BASE/upper" "$ROOT_BASE/work" "$ROOT_BASE/merged"
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$ROOT_BASE/upper,workdir=$ROOT_BASE/work" \
        "$ROOT_BASE/merged"
    ROOT=$ROOT_BASE/merged
    mount -t proc proc "$ROOT/proc"
    mount --rbind /sys "$ROOT/sys"
    mount --rbind /dev "$ROOT/dev"
    mount -t tmpfs tmpfs "$ROOT/tmp"
    # the checkout at its own path, and at one outside /tmp for the dkms command: rpm 4.20
    # runs scriptlets with a private /tmp
    local at
    for at in "$repo" /opt/dkms-hooks; do
        mkdir -p "$ROOT$at"
        mount --bind "$repo" "$ROOT$at"
        mount -o remount,bind,ro "$ROOT$at"
    done
    local d
    for d in "$@"; do
        mkdir -p "$ROOT$d"
        mount --bind "$d" "$ROOT$d"
    done
    for d in usr/bin usr/sbin; do
        printf '#!/bin/sh\nPYTHONPATH=/opt/dkms-hooks exec python3 -m dkms_hooks "$@"\n' > "$ROOT/$d/dkms"
        chmod +x "$ROOT/$d/dkms"
    done
    export ROOT
    trap root_down EXIT
}
root_down() {
    cd /
    umount -R -l "$ROOT_BASE" 2>/dev/null
    rmdir "$ROOT_BASE" 2>/dev/null
    true
}
