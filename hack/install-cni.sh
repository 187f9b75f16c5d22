#!/bin/bash
# Installs criruntime's own CNI plugins into the CNI bin dir and, when the conf dir has no network
# config at all, writes a default one that uses them. Never overwrites an operator's config.
# Usage: hack/install-cni.sh [BIN_DIR] [CONF_DIR]   (defaults /opt/cni/bin, /etc/cni/net.d)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-/opt/cni/bin}
CONF=${2:-/etc/cni/net.d}
VENV_BIN=$(pwd)/.venv/bin

mkdir -p "$BIN" "$CONF"
# Symlinks to the venv's console scripts: any runtime can exec them, and they follow upgrades.
for p in bridge host-local portmap loopback; do
  ln -sfn "$VENV_BIN/criruntime-$p" "$BIN/criruntime-$p"
done

# Any one of the three kinds is a config (ls of all three would fail when one kind is absent).
if ! compgen -G "$CONF/*.conf" >/dev/null && ! compgen -G "$CONF/*.conflist" >/dev/null \
  && ! compgen -G "$CONF/*.json" >/dev/null; then
  cat > "$CONF/10-criruntime.conflist" <<'JSON'
{
  "cniVersion": "1.0.0",
  "name": "criruntime",
  "plugins": [
    {
      "type": "criruntime-bridge",
      "bridge": "crir0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "criruntime-host-local",
        "ranges": [[{"subnet": "10.88.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "criruntime-portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  echo "install-cni: wrote $CONF/10-criruntime.conflist (bridge crir0, 10.88.0.0/16)"
fi
