"""Upstream dkms against dkms-hooks on the same work, alternating, several repetitions,
medians. Runs inside the overlay bench/run sets up: it installs Debian's dkms package as
the reference (and a third kernel's headers) there, and resets the trees between runs."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import cache  # noqa: E402
from fabricate import fabricate  # noqa: E402

OURS = [os.environ["DKMS_HOOKS_BENCH_DKMS"]] if os.environ.get("DKMS_HOOKS_BENCH_DKMS") else [
    sys.executable, "-m", "dkms_hooks"]
UPSTREAM = ["/usr/sbin/dkms"]
#: our settings inside the overlay
SETTINGS = Path("/etc/dkms/dkms-hooks.toml")
QUICK = "--quick" in sys.argv
REPS = 1 if QUICK else 3
MODULES = 6
STATUS_MODULES = 10 if QUICK else 50
ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
if not os.environ.get("DKMS_HOOKS_BENCH_DKMS"):
    ENV["PYTHONPATH"] = str(REPO)
C = """#include <linux/module.h>
static int __init m_init(void) {{ pr_info("{name}\\n"); return 0; }}
static void __exit m_exit(void) {{ }}
module_init(m_init); module_exit(m_exit);
MODULE_LICENSE("GPL"); MODULE_VERSION("1.0");
"""


def sh(*argv: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.monotonic()
    res = subprocess.run(argv, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{res.stdout[-3000:]}")
    return took, res.stdout


def in_overlay() -> bool:
    res = sh("findmnt", "-n", "-o", "FSTYPE", "--mountpoint", "/usr", check=False)
    return res.stdout.strip() == "overlay"


def kernels() -> list[str]:
    ks = [k for k in os.listdir("/lib/modules") if Path(f"/lib/modules/{k}/build/include").is_dir()]
    return sorted(ks)


def reset() -> None:
    shutil.rmtree("/var/lib/dkms", ignore_errors=True)
    shutil.rmtree("/var/cache/dkms-hooks", ignore_errors=True)
    Path("/var/lib/dkms").mkdir()  # upstream refuses to add into a tree that does not exist
    for k in kernels():
        shutil.rmtree(f"/lib/modules/{k}/updates", ignore_errors=True)
    for d in Path("/usr/src").glob("bench*"):
        shutil.rmtree(d)


def write_modules(count: int) -> list[str]:
    names = []
    for i in range(count):
        name = f"benchmod{i}"
        src = Path(f"/usr/src/{name}-1.0")
        src.mkdir(parents=True, exist_ok=True)
        (src / f"{name}.c").write_text(C.format(name=name))
        (src / "Makefile").write_text(f"obj-m := {name}.o\n")
        (src / "dkms.conf").write_text(f'PACKAGE_NAME="{name}"\nPACKAGE_VERSION="1.0"\nBUILT_MODULE_NAME[0]="{name}"\n'
                                       'DEST_MODULE_LOCATION[0]="/updates"\nAUTOINSTALL="yes"\n')
        names.append(name)
    return names


def setup_reference() -> None:
    if not Path("/usr/sbin/dkms").exists() or "dkms-hooks" in Path("/usr/sbin/dkms").read_text(errors="replace"):
        print("installing Debian's dkms as the reference (inside the overlay)...", flush=True)
        sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", "dkms")
    if len(kernels()) < 3:
        sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", "linux-headers-6.1.0-56-cloud-amd64",
           check=False)
    # Debian's kernel hooks would call upstream dkms behind our back
    for hook in Path("/etc/kernel").glob("*.d/dkms"):
        hook.unlink()


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def raw_make_floor(names: list[str], ks: list[str], budget: int) -> tuple[float, float]:
    total = 0.0
    for k in ks:
        for n in names:
            tmp = Path(f"/tmp/benchraw-{n}-{k}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(f"/usr/src/{n}-1.0", tmp)
            took, _ = timed(["make", "-j1", "-C", f"/lib/modules/{k}/build", f"M={tmp}", "modules"])
            total += took
            shutil.rmtree(tmp)
    depmods = 0.0
    for k in ks:
        if Path(f"/lib/modules/{k}/modules.dep").is_file():
            took, _ = timed(["depmod", "-a", k])
            depmods += took
    return total / budget + depmods, total


def peak_rss_kb(argv: list[str]) -> int:
    res = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    return int(res.stderr.strip().splitlines()[-1])


def main() -> None:
    if os.geteuid() != 0 or not in_overlay():
        raise SystemExit("run me through bench/run (root, inside the throwaway overlay)")
    setup_reference()
    ks = kernels()
    budget = len(os.sched_getaffinity(0))
    installed_trees = [k for k in ks if Path(f"/lib/modules/{k}/modules.dep").is_file()]
    print(f"machine: {budget} cores, kernels with headers: {', '.join(ks)}; module tree installed for: "
          f"{', '.join(installed_trees) or 'none'}", flush=True)
    print(f"upstream: {sh(*UPSTREAM, '--version').stdout.strip()} (Debian package); ours: dkms-hooks", flush=True)
    if "--cache" in sys.argv:
        cache_section(ks)
        return
    # these scenarios measure building: the build cache would turn every repetition after the
    # first into a hit (cache_section measures it on its own)
    SETTINGS.parent.mkdir(parents=True, exist_ok=True)
    SETTINGS.write_text("[cache]\nenabled = false\n")
    results: list[tuple[str, float, float]] = []

    # 1. autoinstall of 6 modules for every kernel, each driven the way its distro hooks drive it:
    #    upstream: Debian's header_postinst.d hook runs `dkms autoinstall -k K` for each kernel;
    #    ours: the same hooks queue inside the APT run and Post-Invoke builds everything at once.
    up, us = [], []
    for _ in range(REPS):
        reset()
        names = write_modules(MODULES)
        for n in names:
            sh(*UPSTREAM, "add", f"{n}/1.0")
        start = time.monotonic()
        for k in ks:
            timed([*UPSTREAM, "autoinstall", "-k", k])
        up.append(time.monotonic() - start)
        reset()
        names = write_modules(MODULES)
        for n in names:
            sh(*OURS, "add", f"{n}/1.0")
        start = time.monotonic()
        for k in ks:
            timed([*OURS, "event", "apt", "headers-postinst", k], env={**ENV, "DPKG_FRONTEND_LOCKED": "1"})
        timed([*OURS, "event", "apt", "post-invoke"])
        us.append(time.monotonic() - start)
    floor, raw_total = raw_make_floor(names, ks, budget)
    results.append((f"autoinstall {MODULES} modules x {len(ks)} kernels", median(up), median(us)))
    print(f"  floor: raw make {raw_total:.1f} s / {budget} jobs + one depmod per kernel = {floor:.1f} s; "
          f"ours is {median(us) / floor:.2f}x the floor", flush=True)

    # 2. status, every module built and installed on every kernel, at two sizes (linearity)
    reset()
    small = max(STATUS_MODULES // 5, 2)
    fabricate(Path("/"), ks, small, OURS)
    up_small = median([timed([*UPSTREAM, "status"])[0] for _ in range(REPS)])
    us_small = median([timed([*OURS, "status"])[0] for _ in range(REPS + 2)])
    results.append((f"status, {small} modules x {len(ks)} kernels", up_small, us_small))
    fabricate(Path("/"), ks, STATUS_MODULES, OURS)
    up, us = [], []
    for _ in range(REPS + 2):
        up.append(timed([*UPSTREAM, "status"])[0])
        us.append(timed([*OURS, "status"])[0])
    lines = len(timed([*OURS, "status"])[1].splitlines())
    results.append((f"status, {STATUS_MODULES} modules x {len(ks)} kernels ({lines} lines)", median(up), median(us)))
    q = ["status", "-m", "bench0001", "-v", "1.0", "-k", ks[0]]
    up = [timed([*UPSTREAM, *q])[0] for _ in range(REPS + 2)]
    us = [timed([*OURS, *q])[0] for _ in range(REPS + 2)]
    results.append(("status -m -v -k", median(up), median(us)))
    status_rss = peak_rss_kb([*OURS, "status"])

    # 3. one build for one kernel: overhead over the raw make of the same sources
    reset()
    names = write_modules(1)
    k = ks[0]
    sh(*UPSTREAM, "add", f"{names[0]}/1.0")
    raw, up, us = [], [], []
    for _ in range(REPS + 4):
        tmp = Path("/tmp/benchraw")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(f"/usr/src/{names[0]}-1.0", tmp)
        raw.append(timed(["make", f"-j{budget}", f"KERNELRELEASE={k}", "-C", f"/lib/modules/{k}/build", f"M={tmp}"])[0])
        up.append(timed([*UPSTREAM, "build", f"{names[0]}/1.0", "-k", k, "--force"])[0])
        us.append(timed([*OURS, "build", f"{names[0]}/1.0", "-k", k, "--force"])[0])
    # the overhead of each run over the raw make run just before it, then the median: the
    # machine's drift between repetitions (10-20 % on this shared VM) cancels out
    print(f"  one build: raw make {median(raw):.2f} s; overhead upstream "
          f"{median([u - r for u, r in zip(up, raw)]):+.2f} s, ours {median([u - r for u, r in zip(us, raw)]):+.2f} s "
          f"(median of {len(raw)} paired differences)", flush=True)
    results.append(("one build (1 module, 1 kernel)", median(up), median(us)))

    # 3b. the same, with make's own time taken out: MAKE copies a module built beforehand, so
    # what is left is each tool's fixed cost per build (reading dkms.conf, setup, strip, the
    # move into the tree), measured without the compiler's noise around it
    prebuilt = Path("/tmp/benchraw/" + names[0] + ".ko")
    fixed = Path("/usr/src/benchfixed-1.0")
    fixed.mkdir()
    shutil.copy(prebuilt, fixed / "prebuilt.ko")
    (fixed / "dkms.conf").write_text('PACKAGE_NAME="benchfixed"\nPACKAGE_VERSION="1.0"\n'
                                     'BUILT_MODULE_NAME[0]="benchfixed"\nDEST_MODULE_LOCATION[0]="/updates"\n'
                                     'MAKE[0]="cp prebuilt.ko benchfixed.ko"\n')
    sh(*UPSTREAM, "add", "benchfixed/1.0")
    up, us = [], []
    for _ in range(3 * (REPS + 4)):
        up.append(timed([*UPSTREAM, "build", "benchfixed/1.0", "-k", k, "--force"])[0])
        us.append(timed([*OURS, "build", "benchfixed/1.0", "-k", k, "--force"])[0])
    print(f"  fixed cost per build (make copies a built module): upstream {median(up) * 1000:.0f} ms, "
          f"ours {median(us) * 1000:.0f} ms (median of {len(up)})", flush=True)
    results.append(("fixed cost per build (no compiling)", median(up), median(us)))

    # 4. install and uninstall with depmod, on the kernel whose module tree is installed
    k = installed_trees[0] if installed_trees else ks[0]
    for tool in (UPSTREAM, OURS):
        timed([*tool, "build", f"{names[0]}/1.0", "-k", k, "--force"])
        break
    up, us = [], []
    for _ in range(REPS):
        up.append(timed([*UPSTREAM, "install", f"{names[0]}/1.0", "-k", k])[0]
                  + timed([*UPSTREAM, "uninstall", f"{names[0]}/1.0", "-k", k])[0])
        us.append(timed([*OURS, "install", f"{names[0]}/1.0", "-k", k])[0]
                  + timed([*OURS, "uninstall", f"{names[0]}/1.0", "-k", k])[0])
    results.append((f"install + uninstall with depmod ({k})", median(up), median(us)))

    # peak memory of our own process during a full autoinstall transaction
    reset()
    for n in write_modules(MODULES):
        sh(*OURS, "add", f"{n}/1.0")
    rss = subprocess.run([*OURS, "event", "apt", "headers-postinst", ks[0]], env={**ENV, "DKMS_HOOKS_REPORT_RSS": "1"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    own = [line for line in rss.splitlines() if line.startswith("dkms-hooks peak RSS")]

    print()
    print(f"{'work':<55} {'upstream':>9} {'ours':>9} {'ratio':>7}")
    for what, u, o in results:
        print(f"{what:<55} {u:>8.2f}s {o:>8.2f}s {o / u:>6.3f}x")
    print(f"peak memory of our process: status {status_rss / 1024:.0f} MB; "
          f"{own[-1].split(':', 1)[1].strip() if own else 'n/a'} during an autoinstall transaction")
    cache_section(ks)


def cache_section(ks: list[str]) -> None:
    """The build cache (bench/cache.py): a repeat build, and a second host from a registry."""
    SETTINGS.unlink(missing_ok=True)
    reset()
    print("\nbuild cache:", flush=True)
    rows = cache.repeat_build(OURS, UPSTREAM, ks[0], REPS)
    heavy = [f"benchfleet{i}" for i in range(MODULES)]
    for n in heavy:
        cache.write_heavy(Path("/usr/src"), n)
    rows += cache.fleet(OURS, UPSTREAM, ks, heavy, "driver-sized")
    rows += cache.fleet(OURS, UPSTREAM, ks, write_modules(MODULES), "one-file")
    reset()
    print(f"{'work':<92} {'baseline':>9} {'ours':>9} {'ratio':>7}")
    for what, base, ours in rows:
        print(f"{what:<92} {base:>8.2f}s {ours:>8.2f}s {ours / base:>6.3f}x")
    if os.environ.get("BENCH_HOST_NS_PID"):
        os.kill(int(os.environ["BENCH_HOST_NS_PID"]), signal.SIGTERM)


if __name__ == "__main__":
    main()
