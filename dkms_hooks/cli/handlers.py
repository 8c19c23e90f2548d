"""The verbs that change the trees, one handler each: upstream's argument and permission
checks, then the transaction layer; post_transaction after the verbs upstream runs it for."""

from __future__ import annotations

import os
from collections.abc import Callable

from dkms_hooks.cli import setup
from dkms_hooks.model.context import Context
from dkms_hooks.ops import add, signing, tarball
from dkms_hooks.system.errors import DkmsError
from dkms_hooks.transaction import autoinstall, verbs


def take_off(ctx: Context) -> int:
    """remove, unbuild, uninstall."""
    action = ctx.options.action
    verbs.check_module_args(ctx, action)
    verbs.module_is_broken_and_die(ctx)
    verbs.module_is_added_or_die(ctx)
    if action == "uninstall":
        setup.check_root_for_install(ctx)
        verbs.uninstall_module(ctx)
    else:
        verbs.check_rw_dkms_tree(ctx)
        (verbs.remove_module if action == "remove" else verbs.unbuild_module)(ctx)
    _maybe_post_transaction(ctx)
    return 0


def put_on(ctx: Context) -> int:
    """add, build, install."""
    o = ctx.options
    action = o.action
    if o.all:
        raise DkmsError(5, f"The action {action} does not support the --all parameter.")
    if action != "add":
        verbs.module_is_broken_and_die(ctx)
    if action == "install":
        setup.check_root_for_install(ctx)
    else:
        verbs.check_rw_dkms_tree(ctx)
    if action == "add":
        verbs.add_verb(ctx)
        return 0
    if not o.module and not o.version and (o.try_source_tree or o.archive):
        ctx = verbs.add_verb(ctx)
        ctx.console.print("")
    verbs.check_module_args(ctx, action)
    if action == "build":
        verbs.build_module(ctx)
    else:
        verbs.install_module(ctx)
        _maybe_post_transaction(ctx)
    return 0


def autoinstall_verb(ctx: Context) -> int:
    """autoinstall, kernel_postinst."""
    action = ctx.options.action
    setup.have_one_kernel(ctx, action)
    setup.check_root_for_install(ctx)
    installed = autoinstall.autoinstall(ctx)
    if installed and action == "autoinstall":
        _maybe_post_transaction(ctx)
    return 0


def kernel_removal(ctx: Context) -> int:
    """kernel_preinst, kernel_prerm."""
    action = ctx.options.action
    setup.check_root_for_install(ctx)
    setup.have_one_kernel(ctx, action)
    (autoinstall.kernel_preinst if action == "kernel_preinst" else autoinstall.kernel_prerm)(ctx)
    return 0


def generate_mok(ctx: Context) -> int:
    values = signing.read_signing_settings(ctx, None)
    signing.prepare_mok(ctx, values, None)
    return 0


def match(ctx: Context) -> int:
    add.check_root(ctx)
    setup.have_one_kernel(ctx, "match")
    verbs.run_match(ctx)
    return 0


def mktarball(ctx: Context) -> int:
    verbs.check_module_args(ctx, "mktarball")
    verbs.module_is_broken_and_die(ctx)
    verbs.module_is_added_or_die(ctx)
    tarball.make_tarball(ctx)
    return 0


def ldtarball(ctx: Context) -> int:
    if os.geteuid() != 0 and ctx.options.force:
        raise DkmsError(1, "You must be root to use this command with the --force option.")
    return verbs.ldtarball(ctx)


def _maybe_post_transaction(ctx: Context) -> None:
    if ctx.framework.get("post_transaction"):
        verbs.post_transaction(ctx)


HANDLERS: dict[str, Callable[[Context], int]] = {
    "remove": take_off, "unbuild": take_off, "uninstall": take_off,
    "add": put_on, "build": put_on, "install": put_on,
    "autoinstall": autoinstall_verb, "kernel_postinst": autoinstall_verb,
    "kernel_preinst": kernel_removal, "kernel_prerm": kernel_removal,
    "generate_mok": generate_mok, "match": match, "mktarball": mktarball, "ldtarball": ldtarball,
}
