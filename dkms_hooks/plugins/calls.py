"""Every hook dkms-hooks calls, as typed calls: the only place that says ``pm.hook``. Plain
dkms verbs build no plugin manager (it costs more than most verbs): they get the built-in
policy, imported on first use; events get the plugin manager, where third-party plugins
come first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dkms_hooks.model import distro as distros
from dkms_hooks.model.paths import Layout

TYPE_CHECKING = False  # see dkms_hooks/__init__.py: every command imports this module
if TYPE_CHECKING:
    from typing import TextIO

    import pluggy

    from dkms_hooks.model.events import Event


class PluginCalls:
    """Implements model.context.Plugins over a plugin manager, or over the built-in policy
    when there is none (``pm`` None)."""

    def __init__(self, pm: pluggy.PluginManager | None, distro: str, layout: Layout) -> None:
        self.pm = pm
        self.distro = distro
        self.layout = layout

    # --- events
    def parse_event(self, source: str, argv: Sequence[str], env: Mapping[str, str], stdin: TextIO) -> Event | None:
        if self.pm is None:
            return None
        event: Event | None = self.pm.hook.dkms_parse_event(source=source, argv=argv, env=env, stdin=stdin,
                                                            layout=self.layout)
        return event

    # --- distribution policy
    def dest_location(self, declared: str) -> str:
        if self.pm is None:
            return distros.dest_module_location(self.distro, declared)
        answer: str | None = self.pm.hook.dkms_dest_module_location(distro=self.distro, declared=declared)
        return answer if answer is not None else declared

    def signing_key(self, kver: str) -> tuple[str, str] | None:
        if self.pm is None:
            from dkms_hooks.plugins import policy  # lazy: it imports pluggy (start-up speed)

            return policy.dkms_signing_key(distro=self.distro, kver=kver, layout=self.layout)
        pair: tuple[str, str] | None = self.pm.hook.dkms_signing_key(distro=self.distro, kver=kver,
                                                                      layout=self.layout)
        return pair

    def headers_hint(self, kver: str) -> str:
        if self.pm is None:
            from dkms_hooks.plugins import policy  # lazy: it imports pluggy (start-up speed)

            return policy.dkms_headers_hint(kver=kver, distro=self.distro) or ""
        hint: str | None = self.pm.hook.dkms_headers_hint(kver=kver, distro=self.distro)
        return hint or ""

    # --- what happened to a module (no built-in plugin listens)
    def module_installed(self, module: str, version: str, kver: str, arch: str) -> None:
        if self.pm is not None:
            self.pm.hook.dkms_module_installed(module=module, version=version, kver=kver, arch=arch,
                                               layout=self.layout)

    def module_removed(self, module: str, version: str, kver: str, arch: str) -> None:
        if self.pm is not None:
            self.pm.hook.dkms_module_removed(module=module, version=version, kver=kver, arch=arch,
                                             layout=self.layout)

    # --- initramfs
    def initramfs_tool(self, configured: str) -> str | None:
        """The generator to run, or None when there is none (or no plugin manager)."""
        if self.pm is None:
            return None
        tool: str | None = self.pm.hook.dkms_initramfs_tool(layout=self.layout, configured=configured)
        return None if not tool or tool == "none" else str(tool)

    def initramfs_contains(self, tool: str, kver: str, names: Sequence[str]) -> bool:
        if self.pm is None:
            return False
        return bool(self.pm.hook.dkms_initramfs_contains(tool=tool, kver=kver, names=list(names), layout=self.layout))

    def regenerate_initramfs(self, tool: str, kver: str) -> bool:
        if self.pm is None:
            return False
        return bool(self.pm.hook.dkms_regenerate_initramfs(tool=tool, kver=kver, layout=self.layout))
