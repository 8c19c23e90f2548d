"""Plain data and pure reading: layout, kernels, dkms.conf and settings, tree state, events."""
