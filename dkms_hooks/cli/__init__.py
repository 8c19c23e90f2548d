"""The face: upstream's command line, our verbs, the one error handler, Debian's helpers."""
