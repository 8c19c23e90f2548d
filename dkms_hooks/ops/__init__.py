"""One (module, kernel) step each: add, build, sign, install, depmod, scripts, journal."""
