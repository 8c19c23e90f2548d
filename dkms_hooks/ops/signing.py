"""Module signing: find sign-file, the key and the certificate (generating a MOK pair
when none exists), as upstream prepares them once per kernel."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from dkms_hooks.model import settings
from dkms_hooks.model.context import Context, Signing
from dkms_hooks.model.kernel import KernelTarget
from dkms_hooks.system import run
from dkms_hooks.system.errors import DkmsError

_GENERATING = threading.Lock()


def running_in_chroot(env: dict[str, str]) -> bool:
    """Debian's ischroot heuristics, which upstream uses to decide whether to sign."""
    if env.get("FAKECHROOT") == "true" and "FAKECHROOT_BASE" in env and "libfakechroot.so" in env.get(
        "LD_PRELOAD", ""
    ):
        return True
    try:
        if Path("/proc/1/mountinfo").read_bytes() != Path("/proc/self/mountinfo").read_bytes():
            return True
    except OSError:
        pass
    if os.geteuid() == 0:
        try:
            a, b = os.stat("/proc/1/root"), os.stat("/")
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                return True
        except OSError:
            pass
    return False


def read_signing_settings(ctx: Context, kernel: KernelTarget | None) -> dict[str, str]:
    scope = ctx.conf_scope("", "", kernel) if kernel else {
        "dkms_tree": os.fspath(ctx.layout.dkms_tree),
        "install_tree": os.fspath(ctx.layout.install_tree),
    }
    values = settings.read_framework(ctx.layout, settings.SIGNING, scope=scope, env=ctx.env)
    return values


def prepare_kernel_and_signing(ctx: Context, kver: str, arch: str) -> None:
    if ctx.shell.prepared_kernel == f"{kver}/{arch}":
        return
    if ctx.signing_ready is not None and not ctx.signing_ready.is_set():
        ctx.shell.signing = None  # being prepared for the transaction: build.py waits before signing
        return
    if f"{kver}/{arch}" in ctx.tx.presigned:
        ctx.shell.signing = ctx.tx.presigned[f"{kver}/{arch}"]
        ctx.shell.prepared_kernel = f"{kver}/{arch}"
        return
    kernel = ctx.kernel(kver, arch)
    check_headers(ctx, kernel)
    ctx.shell.signing = prepare_signing(ctx, kernel)
    ctx.shell.prepared_kernel = f"{kver}/{arch}"
    ctx.console.print("")


def check_headers(ctx: Context, kernel: KernelTarget) -> None:
    if kernel.has_headers:
        return
    k, tree = kernel.kver, ctx.layout.install_tree
    raise DkmsError(
        21,
        f"Your kernel headers for kernel {k} cannot be found at {tree}/{k}/build or {tree}/{k}/source.",
        f"Please install your distribution's kernel headers package matching {k}, "
        "or use the --kernelsourcedir option to tell DKMS where it's located.",
    )


def unsigned_because(ctx: Context, kernel: KernelTarget, values: dict[str, str]) -> str | None:
    """Why modules built for ``kernel`` will not be signed, in upstream's words, or None when
    they will be (if sign-file and the key are there). ``dkms plan`` asks it too, so that what
    it says of new builds is what a build does."""
    try_sign = values.get("try_sign_modules", "")
    if try_sign == "false":
        return "Module signing is disabled by policy"
    if try_sign != "true" and running_in_chroot(ctx.env):
        return "Running in chroot"
    if not kernel.config.is_file():
        return f"Kernel config {kernel.config} not found"
    if kernel.sig_hash() is None:
        return "The kernel is built without module signing facility"
    return None


def sign_file_for(ctx: Context, kernel: KernelTarget, values: dict[str, str]) -> tuple[str, str | None]:
    """The sign-file command for ``kernel``, and why it cannot be run (None: it can), in
    upstream's words."""
    sign_file = values.get("sign_file", "") or default_sign_file(ctx, kernel)
    if os.path.isfile(sign_file) and os.access(sign_file, os.X_OK):
        return sign_file, None
    return sign_file, f"Binary {sign_file} not found"


def prepare_signing(ctx: Context, kernel: KernelTarget) -> Signing:
    out = ctx.console.print
    values = read_signing_settings(ctx, kernel)
    why = unsigned_because(ctx, kernel, values)
    sig_hash = kernel.sig_hash()
    if why is not None or sig_hash is None:
        out(f"{why}, modules won't be signed")
        return Signing(False)
    sign_file, missing = sign_file_for(ctx, kernel, values)
    out(f"Sign command: {sign_file}")
    if missing is not None:
        out(f"{missing}, modules won't be signed")
        return Signing(False)
    pair = prepare_mok(ctx, values, kernel)
    if pair is None:
        return Signing(False)
    return Signing(True, sign_file, sig_hash, pair[0], pair[1])


def default_sign_file(ctx: Context, kernel: KernelTarget) -> str:
    k = kernel.kver
    candidate = ""
    d = ctx.distro
    sysroot = ctx.layout.sysroot
    if d.startswith("debian"):
        short = k.rsplit(".", 1)[0] if "." in k else k
        candidate = os.fspath(sysroot / f"usr/lib/linux-kbuild-{short}/scripts/sign-file")
    elif d.startswith("ubuntu"):
        candidate = run.which("kmodsign", ctx.env) or ""
        if not (candidate and os.access(candidate, os.X_OK)):
            candidate = os.fspath(sysroot / f"usr/src/linux-headers-{k}/scripts/sign-file")
    elif d.startswith("gentoo"):
        candidate = os.fspath(sysroot / f"usr/src/linux-{k}/scripts/sign-file")
    if not (candidate and os.path.isfile(candidate)):
        candidate = os.fspath(ctx.layout.install_tree / k / "build/scripts/sign-file")
    return candidate


def _portage_setting(ctx: Context, name: str) -> str:
    make_conf = ctx.layout.sysroot / "etc/portage/make.conf"
    if not make_conf.is_file():
        return ""
    for line in make_conf.read_text(errors="replace").splitlines():
        if line.startswith(name + "="):
            return line.split("=", 1)[1].replace('"', "")
    return ""


def mok_paths(ctx: Context, values: dict[str, str], kernel: KernelTarget | None) -> tuple[str, str]:
    """The key and certificate that sign for ``kernel``, by upstream's rules and the
    distribution's (framework.conf's mok_signing_key/mok_certificate first; Ubuntu's
    update-secureboot-policy pair; Gentoo's MODULES_SIGN_KEY or the kernel's own key; a
    plugin's, such as Fedora's akmods pair; else dkms's own pair in the tree), without
    creating anything."""
    key = values.get("mok_signing_key", "")
    cert = values.get("mok_certificate", "")
    if not key:
        if ctx.distro.startswith("ubuntu"):
            key, cert = map(os.fspath, ctx.layout.ubuntu_mok)
        elif ctx.distro.startswith("gentoo"):
            key = ctx.env.get("MODULES_SIGN_KEY", "") or _portage_setting(ctx, "MODULES_SIGN_KEY")
            cert = ctx.env.get("MODULES_SIGN_CERT", "") or _portage_setting(ctx, "MODULES_SIGN_CERT")
            if not key and kernel is not None and kernel.config.is_file():
                configured = kernel.kconfig().get("CONFIG_MODULE_SIG_KEY", "").replace('"', "")
                if configured:
                    key = os.path.realpath(os.path.join(kernel.source_dir, configured))
                    cert = key
    if not key:
        # without a kernel (generate_mok, mok status) the distribution's pair still counts
        pair = ctx.signing_key(kernel.kver if kernel is not None else "")
        if pair is not None:
            key, cert = pair
    return key or os.fspath(ctx.layout.mok_key), cert or os.fspath(ctx.layout.mok_cert)


def prepare_mok(ctx: Context, values: dict[str, str], kernel: KernelTarget | None) -> tuple[str, str] | None:
    """Upstream's prepare_mok: print the key and certificate paths, generate a pair if
    either is missing. Returns (key, cert), or None when signing is impossible."""
    out = ctx.console.print
    key, cert = mok_paths(ctx, values, kernel)
    ubuntu_default = not values.get("mok_signing_key", "") and ctx.distro.startswith("ubuntu")
    if ubuntu_default and not (os.path.isfile(key) and os.path.isfile(cert)):
        tool = run.which("update-secureboot-policy", ctx.env)
        if not tool:
            out("Binary update-secureboot-policy not found, modules won't be signed")
            return None
        if os.path.isfile(cert):
            os.unlink(cert)
        out("Certificate or key are missing, generating them using update-secureboot-policy...")
        run.run([tool, "--new-key"], env={**ctx.env, "SHIM_NOTRIGGER": "y"},
                stdout=run.DEVNULL, stderr=run.DEVNULL)
        run.run([tool, "--enroll-key"], stdout=None)
    out(f"Signing key: {key}")
    out(f"Public certificate (MOK): {cert}")
    # kernels built side by side must not generate two pairs and keep half of each
    with _GENERATING:
        if not key.startswith("pkcs11:") and not (os.path.isfile(key) and os.path.isfile(cert)):
            out("Certificate or key are missing, generating self signed certificate for MOK...")
            if not run.which("openssl", ctx.env):
                out("openssl not found, can't generate key and certificate.")
                return None
            generate_pair(ctx, Path(key), Path(cert))
            if not os.path.isfile(key):
                out(f"Key file {key} not found and can't be generated, modules won't be signed")
                return None
    if not os.path.isfile(cert):
        out(f"Certificate file {cert} not found and can't be generated, modules won't be signed")
        return None
    return key, cert


def generate_pair(ctx: Context, key: Path, cert: Path) -> None:
    """A self-signed RSA-2048 code-signing certificate valid for 100 years, written to
    temporary names and renamed, so a crash never leaves half a key.

    It is a CA whose only key usage is keyCertSign: kernels built with
    CONFIG_INTEGRITY_CA_MACHINE_KEYRING let a MOK into the .machine keyring (the one module
    signatures are checked against) only then, and with ..._MAX only without
    digitalSignature; other kernels look at neither, nor does module verification."""
    # Only the default location, inside the dkms tree, is created; a configured path
    # whose directory is missing is an error to report, not a directory to invent.
    for p in (key, cert):
        if not p.parent.is_dir() and p.parent == ctx.layout.dkms_tree:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                return
    tmp_key = key.with_name(f".{key.name}.{os.getpid()}.tmp")
    tmp_cert = cert.with_name(f".{cert.name}.{os.getpid()}.tmp")
    old_umask = os.umask(0o077)
    try:
        if not run.which("openssl"):
            ctx.console.warn("openssl not found: no signing key can be made.")
            return
        run.run(
            [
                "openssl", "req", "-new", "-x509", "-nodes", "-days", "36500",
                "-subj", "/CN=DKMS module signing key",
                "-newkey", "rsa:2048", "-keyout", tmp_key,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign",
                "-addext", "extendedKeyUsage=codeSigning",
                "-outform", "DER", "-out", tmp_cert,
            ],
            stdout=run.DEVNULL,
            stderr=run.DEVNULL,
        )  # fmt: skip
    finally:
        os.umask(old_umask)
    # Like openssl writing straight to the final paths, keep whichever half it produced
    # (the key survives a certificate path that cannot be written), each renamed whole.

    if tmp_key.exists() and tmp_key.stat().st_size > 0:
        os.replace(tmp_key, key)
    if tmp_cert.exists() and tmp_cert.stat().st_size > 0:
        os.chmod(tmp_cert, 0o644)
        os.replace(tmp_cert, cert)
    for t in (tmp_key, tmp_cert):
        t.unlink(missing_ok=True)


def sign_module(ctx: Context, signing: Signing, module_file: Path) -> None:
    ctx.console.print(f"Signing module {module_file}")
    res = run.run(
        [signing.sign_file, signing.hash, signing.key, signing.cert, module_file], stderr=run.STDOUT
    )
    if res.returncode != 0:
        lines = res.stdout.rstrip("\n").split("\n") if res.stdout else [""]
        ctx.console.warn(f"Failed to sign module '{module_file}'!", *lines)


