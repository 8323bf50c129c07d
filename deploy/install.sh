#!/usr/bin/env bash
# Install samsa-stream as systemd services on this host (run as root from the source tree).
#   deploy/install.sh            CPU-only SAM2 build
#   SAM2_BUILD_CUDA=1 deploy/install.sh   build SAM2's CUDA extension (GPU node with nvcc)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/samsa-stream
id -u samsa >/dev/null 2>&1 || useradd --system --home-dir /var/lib/samsa-stream --shell /usr/sbin/nologin samsa
mkdir -p "$prefix" /etc/samsa-stream /var/lib/samsa-stream
cp -r "$src/." "$prefix/"
python3.11 -m venv "$prefix/.venv"
SAM2_BUILD_CUDA=${SAM2_BUILD_CUDA:-0} "$prefix/.venv/bin/pip" install "$prefix"
[ -f /etc/samsa-stream/samsa.toml ] || cp "$src/config/samsa.toml" /etc/samsa-stream/samsa.toml
chown -R samsa:samsa /var/lib/samsa-stream
chmod 0750 /etc/samsa-stream
# The ipc socket folder (config default /tmp/samsa-stream): samsa's, 0750, recreated at boot.
cp "$src/systemd/samsa-stream.tmpfiles" /etc/tmpfiles.d/samsa-stream.conf
systemd-tmpfiles --create /etc/tmpfiles.d/samsa-stream.conf
cp "$src"/systemd/*.service "$src"/systemd/*.target /etc/systemd/system/
systemctl daemon-reload
echo "Edit /etc/samsa-stream/samsa.toml, then: systemctl enable --now samsa-stream.target"
echo "Displays on this host: systemctl enable --now samsa-stream-web (browser) samsa-stream-igtl (3D Slicer)"
