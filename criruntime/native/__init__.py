"""Bindings for the few Linux syscalls Python 3.11 lacks (setns, unshare, mount, umount2)."""
