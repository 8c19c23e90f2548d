"""What dkms was asked: upstream's options and actions, and a few of our own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    """The command line as upstream's option loop reads it, completed by the entry point
    (kernels and arches, framework.conf's verbose and symlink_modules), then never changed."""

    action: str = ""
    module: str = ""
    version: str = ""
    kernels: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    conf: str = ""
    template_kernel: str = ""
    archive: str = ""
    kernel_source_dir: str = ""
    kernel_config: str = ""
    try_source_tree: str = ""
    force: bool = False
    force_version_override: bool = False
    all: bool = False
    verbose: bool = False
    rpm_safe_upgrade: bool = False
    binaries_only: bool = False
    source_only: bool = False
    no_depmod: bool = False
    modprobe_on_install: bool = False
    symlink_modules: bool = False
    directives: tuple[tuple[str, str], ...] = ()
    parallel_jobs: str | None = None
    # options of our own
    raw: bool = False
    json: bool = False
    #: plan --build: try the builds in a scratch tree
    plan_build: bool = False
    positional: tuple[str, ...] = ()
