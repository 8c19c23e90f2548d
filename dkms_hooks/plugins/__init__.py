"""The hookspecs, the plugin manager, built-in policy, initramfs tools and host adapters."""
