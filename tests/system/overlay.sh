# Source me as root inside `unshare --mount --propagation private`: puts a copy-on-write
# overlay (upper layer on tmpfs) over /usr /etc /var and a tmpfs copy of /boot, so real
# package managers, depmod and initramfs tools can run against this machine's real state
# while every write vanishes with the namespace. Refuses to go on if a mount is missing.
overlay_up() {
    OVERLAY_BASE=$(mktemp -d /tmp/dkms-hooks-ovl.XXXXXX)
    mount -t tmpfs -o size="${OVERLAY_SIZE:-3g}" dkms-hooks-ovl "$OVERLAY_BASE"
    local d
    for d in usr etc var; do
        mkdir -p "$OVERLAY_BASE/$d/upper" "$OVERLAY_BASE/$d/work"
        mount -t overlay overlay \
            -o "lowerdir=/$d,upperdir=$OVERLAY_BASE/$d/upper,workdir=$OVERLAY_BASE/$d/work" "/$d"
        [ "$(findmnt -n -o FSTYPE --mountpoint "/$d")" = overlay ] || { echo "no overlay on /$d" >&2; exit 99; }
    done
    mkdir -p "$OVERLAY_BASE/boot"
    cp -a /boot/. "$OVERLAY_BASE/boot/"
    mount --bind "$OVERLAY_BASE/boot" /boot
    trap overlay_down EXIT
}
overlay_down() {
    cd /
    # whatever still runs in this namespace (a test killed halfway, a daemon a package
    # started) would write to the real /var and /etc once the overlay is gone: end it first
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$$" ] && continue
        [ /proc/"$p"/ns/mnt -ef /proc/$$/ns/mnt ] && kill -KILL "$p" 2>/dev/null
    done
    umount -l /boot /var /etc /usr "$OVERLAY_BASE" 2>/dev/null
    rmdir "$OVERLAY_BASE" 2>/dev/null
    true
}
