"""Pod cgroups with the cgroupfs driver; the v1 / v2 split lives only in cgroupfs.py."""
