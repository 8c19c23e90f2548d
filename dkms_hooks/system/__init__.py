"""The seams: child processes, the tree lock, the console and live progress, exceptions."""
