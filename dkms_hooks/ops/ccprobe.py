"""Kbuild's compiler probes answered once per transaction.

Every external-module make re-runs the kernel Makefiles' ``cc-option``-style probes: some
thirty compiles of ``/dev/null`` with one flag more, each only asking "does the compiler take
this?". On this project's machine that is 0.4-0.6 s of a 1.2-2 s make for a small module, the
same answers for every module of a kernel. In a transaction that builds several modules for a
kernel, the compiler named by the build's CC is reached through a small shell shim first on
PATH: a compile whose input is ``/dev/null`` is run once and its exit code, output and object
replayed for the same command line from the same directory; everything else goes straight to
the real compiler (one ``exec`` of dash more). Left alone: command lines naming the build's
own directory (a module's own headers could change the answer), dependency files, response
files. The cache lives in a temporary directory for the transaction only, so a compiler
upgraded between two transactions is never answered for. DKMS_HOOKS_PROBE_LOG=FILE makes the
shim note every hit and miss there."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from dkms_hooks.system.run import RunAs

TYPE_CHECKING = False  # see __init__.py
if TYPE_CHECKING:
    from dkms_hooks.model.context import Context

#: the shim; @REAL@ and @STORE@ are filled in, quoted
_SHIM = r"""#!/bin/sh
# dkms-hooks: answers kbuild's compiler probes (compiles of /dev/null) once per transaction
real=@REAL@
store=@STORE@
own=${DKMS_HOOKS_PROBE_OWN_DIR:-}
case $PWD in "$own"*) [ -n "$own" ] && exec "$real" "$@";; esac
out= next= probe= key=$PWD
for a do
    if [ -n "$next" ]; then next= out=$a; key="$key
-o"; continue; fi
    case $a in
        -o) next=1; continue ;;
        /dev/null) probe=1 ;;
        -o?*|-M*|-Wp,*|@*|-save-temps*|-fdump-*) exec "$real" "$@" ;;
    esac
    if [ -n "$own" ]; then case $a in *"$own"*) exec "$real" "$@";; esac; fi
    key="$key
$a"
done
[ -n "$probe" ] || exec "$real" "$@"
sum=$(printf '%s' "$key" | md5sum) || exec "$real" "$@"
c=$store/${sum%% *}
rc=
[ -f "$c.rc" ] && read -r rc < "$c.rc"
case $rc in
[0-9]*)
    if [ -n "$out" ] && [ -f "$c.o" ]; then cp "$c.o" "$out" || exec "$real" "$@"; fi
    [ -s "$c.1" ] && cat "$c.1"
    [ -s "$c.2" ] && cat "$c.2" >&2
    [ -n "${DKMS_HOOKS_PROBE_LOG:-}" ] && echo "hit $rc" >> "$DKMS_HOOKS_PROBE_LOG"
    exit "$rc" ;;
esac
[ -n "${DKMS_HOOKS_PROBE_LOG:-}" ] && echo "miss" >> "$DKMS_HOOKS_PROBE_LOG"
"$real" "$@" >"$c.1.$$" 2>"$c.2.$$"
rc=$?
[ -s "$c.1.$$" ] && cat "$c.1.$$"
[ -s "$c.2.$$" ] && cat "$c.2.$$" >&2
if [ -n "$out" ] && [ -f "$out" ]; then cp "$out" "$c.o.$$" && mv -f "$c.o.$$" "$c.o"; fi
mv -f "$c.1.$$" "$c.1" && mv -f "$c.2.$$" "$c.2" && echo "$rc" > "$c.rc"
exit "$rc"
"""


class ProbeCache:
    """A transaction's probe answers: a shim per compiler name, one store."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dkms-hooks-ccprobe."))
        self.bin = self.root / "bin"
        self.store = self.root / "store"
        self.bin.mkdir()
        self.store.mkdir()
        self._lock = threading.Lock()
        self._owner: int | None = None
        #: a noexec /tmp would make every compile fail: no shim there
        self.usable = not os.statvfs(self.bin).f_flag & os.ST_NOEXEC

    def env(self, env: Mapping[str, str], own_dir: Path, user: RunAs | None) -> dict[str, str]:
        """The build environment with the shim for the build's compiler first on PATH, or
        unchanged when that compiler is not a plain name found on PATH."""
        name = env.get("CC") or "gcc"
        path = env.get("PATH", os.defpath)
        if not self.usable or "/" in name or any(c.isspace() for c in name):
            return dict(env)
        real = shutil.which(name, path=path)
        if real is None:
            return dict(env)
        with self._lock:
            shim = self.bin / name
            if not shim.exists():
                text = _SHIM.replace("@REAL@", shlex.quote(os.path.abspath(real)))
                text = text.replace("@STORE@", shlex.quote(os.fspath(self.store)))
                tmp = self.bin / f".{name}.new"
                tmp.write_text(text)
                tmp.chmod(0o755)
                tmp.rename(shim)
            if user is not None and self._owner != user.uid:
                # the build user's makes write the answers
                os.chown(self.store, user.uid, user.gid)
                self.root.chmod(0o755)
                self._owner = user.uid
        return {**env, "PATH": f"{self.bin}:{path}", "DKMS_HOOKS_PROBE_OWN_DIR": os.fspath(own_dir)}

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def for_transaction(ctx: Context, kernels: Iterable[str]) -> Iterator[None]:
    """Probe answers shared by the builds of a transaction (``kernels``: one entry per job)
    when some kernel gets more than one build; a single build gains nothing from them."""
    counts = Counter(kernels)
    if ctx.tx.cc_probes is not None or not ctx.hooks.compiler_probe_cache or max(counts.values(), default=0) < 2:
        yield
        return
    cache = ProbeCache()
    ctx.tx.cc_probes = cache
    try:
        yield
    finally:
        ctx.tx.cc_probes = None
        cache.close()
