#!/bin/bash
# Installs the Debian packages criruntime needs, by group, skipping what is already there.
#   runtime: what the daemon drives (OCI runtimes, the conmon monitor, netlink/iptables tools)
#   test:    what the test suite starts for real (local registry, reference CNI plugins, htpasswd)
#   bench:   what the benchmarks compare against (containerd)
# Usage: hack/install-deps.sh GROUP...
set -euo pipefail

declare -A GROUP=(
  [runtime]="runc crun conmon catatonit iproute2 iptables util-linux ca-certificates python3-venv"
  [test]="docker-registry apache2-utils containernetworking-plugins busybox-static curl openssl"
  [bench]="containerd"
)

need=()
for g in "$@"; do
  [ -n "${GROUP[$g]:-}" ] || { echo "install-deps: unknown group '$g'" >&2; exit 2; }
  for p in ${GROUP[$g]}; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
done
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing Debian packages (${need[*]}); run as root" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: containerd must not pull in a second runc or start anything
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
