"""Pod sandbox lifecycle: pinned namespaces, pod cgroup, hostname/hosts/resolv.conf, CNI."""
