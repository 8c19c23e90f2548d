"""PRE_BUILD, POST_BUILD, POST_ADD, PRE_INSTALL, POST_INSTALL and POST_REMOVE scripts."""

from __future__ import annotations

import os
from pathlib import Path

from dkms_hooks.model.context import Context
from dkms_hooks.ops import steps
from dkms_hooks.system import run
from dkms_hooks.system.errors import SilentExit


def run_script(
    ctx: Context, kind: str, script: str, module: str, version: str, *, logfile: Path | None = None,
    variables: dict[str, str] | None = None, as_user: run.RunAs | None = None,
) -> int:
    """Run a dkms.conf script the way upstream does. ``kind`` is e.g. ``post_add``.

    Build scripts run from the build directory and log to make.log; a failure there ends
    the run with the script's own exit code. The others run from the source directory with
    their output on the terminal, and only their exit code is returned."""
    if not script:
        return 0
    where = "build" if kind in ("pre_build", "post_build") else "source"
    run_dir = ctx.layout.version_dir(module, version) / where
    command = f"{run_dir}/{script}"
    override_dir = ctx.layout.script_override_dir(module)
    first_word = script.split(" ", 1)[0]
    if os.access(override_dir / first_word, os.X_OK) and (override_dir / first_word).is_file():
        run_dir = override_dir
        command = f"{override_dir}/{script}"
    executable = command.split(" ", 1)[0]
    if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        ctx.console.print("")
        ctx.console.warn(f"The {kind} script is not executable.")
        return 0
    if logfile is not None:
        rc = steps.invoke_shell(
            ctx, f"cd {run_dir}/ && {command}", f"Running the {kind} script", logfile,
            variables=variables, env=ctx.build_env(), as_user=as_user,
        )
        if rc != 0:
            ctx.console.print(f"Consult {logfile} for more information.")
            raise SilentExit(rc)
        return 0
    ctx.console.print(f"Running the {kind} script:")
    # upstream execs the unquoted string: split on blanks, no further shell evaluation
    # PWD keeps the logical path a shell's `cd` would give (the source dir is a symlink)
    res = run.run(command.split(), cwd=run_dir, env={**ctx.build_env(), "PWD": str(run_dir)}, stdout=None)
    return res.returncode
