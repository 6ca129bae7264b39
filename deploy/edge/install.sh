#!/usr/bin/env bash
# Install the gridclear edge agent on Raspberry Pi OS bookworm (arm64 or armv7),
# or any Debian 12 machine. Run as root from a gridclear checkout:
#
#   sudo deploy/edge/install.sh
#
# What it does, idempotently (safe to run again to upgrade):
#   - installs Python 3.11 and the build tools PyNaCl needs where no wheel exists;
#   - creates the unprivileged user "gridclear" in group "dialout" (RS-485 adapters);
#   - installs gridclear-shared and gridclear-edge into /opt/gridclear-edge (a venv);
#   - creates /etc/gridclear/edge.toml from the example if there is none;
#   - creates the device key in /var/lib/gridclear (0600) if there is none and
#     prints its public key for enrolment;
#   - installs and enables the systemd unit (it starts once the configuration is edited).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
prefix=/opt/gridclear-edge
state=/var/lib/gridclear
conf=/etc/gridclear

[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
arch=$(dpkg --print-architecture)
case "$arch" in
  arm64|armhf|amd64) ;;
  *) echo "warning: untested architecture $arch" >&2 ;;
esac

echo "==> system packages"
apt-get update -q
# build-essential and libffi-dev: PyNaCl builds from source where piwheels/PyPI has no wheel.
apt-get install -y -q python3 python3-venv python3-dev build-essential libffi-dev libsodium-dev

echo "==> user gridclear (group dialout for serial adapters)"
if ! id gridclear >/dev/null 2>&1; then
  adduser --system --group --home "$state" --no-create-home gridclear
fi
usermod -a -G dialout gridclear

echo "==> $prefix"
python3 -m venv "$prefix"
"$prefix/bin/pip" install -q --upgrade pip
# On armv7 PyPI has few wheels; piwheels (preconfigured on Raspberry Pi OS) provides them.
SODIUM_INSTALL=system "$prefix/bin/pip" install -q "$repo/shared" "$repo/edge"
"$prefix/bin/gridclear-edge" --version

echo "==> $conf and $state"
install -d -m 0755 "$conf"
install -d -m 0700 -o gridclear -g gridclear "$state"
if [ ! -e "$conf/edge.toml" ]; then
  install -m 0640 -o root -g gridclear "$here/edge.toml.example" "$conf/edge.toml"
  echo "    created $conf/edge.toml: edit device_id, [mqtt] and [[meters]]"
fi
if [ ! -e "$state/device.key" ]; then
  echo "==> device key (give this public key to the operator for enrolment)"
  runuser -u gridclear -- "$prefix/bin/gridclear-edge" keygen --key "$state/device.key"
else
  runuser -u gridclear -- "$prefix/bin/gridclear-edge" keygen --key "$state/device.key" --public
fi

echo "==> systemd unit"
install -m 0644 "$here/gridclear-edge.service" /etc/systemd/system/gridclear-edge.service
systemctl daemon-reload
systemctl enable gridclear-edge.service
cat <<NEXT

Installed. Next:
  1. edit $conf/edge.toml (device_id, broker, meters)
  2. check the meters:   sudo -u gridclear $prefix/bin/gridclear-edge read --config $conf/edge.toml
  3. start the agent:    sudo systemctl restart gridclear-edge
  4. watch it:           journalctl -u gridclear-edge -f
                         sudo -u gridclear $prefix/bin/gridclear-edge status --config $conf/edge.toml
NEXT
