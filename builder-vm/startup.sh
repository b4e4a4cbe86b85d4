#!/bin/sh
# The builder VM's startup script: the guest agent runs it as root at every boot, so every step
# is idempotent. `cargo xtask create-vms` gives it to every VM of the pool (instance metadata
# `startup-script`); ARM64_BUILDER.md explains each step. What it sets up:
# - Docker Engine, from Docker's apt repository, with the containerd image store, on its unix
#   socket only (no TCP listener);
# - the tunnel user `buildx`, in the group docker and no other, its key in a file only root writes;
# - sshd: root never logs in, and every session of `buildx` runs `docker system dial-stdio`;
# - the idle timer, which powers the VM off after IDLE_MINUTES without a session of `buildx`.
# Its settings come from the instance's metadata: `tunnel-authorized-key` (the public half of
# the key Cloud Build logs in with), `idle-minutes` (20), `registry` (us-docker.pkg.dev).
set -eu

attribute() {
  curl -fsS -H 'Metadata-Flavor: Google' \
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1" 2>/dev/null || true
}
IDLE_MINUTES=$(attribute idle-minutes)
REGISTRY=$(attribute registry)
AUTHORIZED_KEY=$(attribute tunnel-authorized-key)

# write_file PATH MODE: the text on stdin, written whole (a boot that stops halfway leaves no
# half-written file).
write_file() {
  cat > "$1.new"
  chmod "$2" "$1.new"
  mv "$1.new" "$1"
}

# Docker Engine, once.
if ! command -v docker >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq ca-certificates curl
  install -m 0755 -d /etc/apt/keyrings
  curl -fsSL https://download.docker.com/linux/debian/gpg -o /etc/apt/keyrings/docker.asc
  chmod a+r /etc/apt/keyrings/docker.asc
  . /etc/os-release
  echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] \
https://download.docker.com/linux/debian $VERSION_CODENAME stable" > /etc/apt/sources.list.d/docker.list
  apt-get update -qq
  apt-get install -y -qq docker-ce docker-ce-cli containerd.io docker-buildx-plugin
fi
# The containerd image store: the engine's own BuildKit builds, pushes and exports registry
# caches, so no BuildKit container is needed.
mkdir -p /etc/docker
if ! grep -q containerd-snapshotter /etc/docker/daemon.json 2>/dev/null; then
  echo '{"features": {"containerd-snapshotter": true}}' | write_file /etc/docker/daemon.json 644
  systemctl restart docker
fi
gcloud auth configure-docker "${REGISTRY:-us-docker.pkg.dev}" --quiet >/dev/null 2>&1 || true

# The tunnel user: no password (`*`, which sshd does not take for a locked account).
id buildx >/dev/null 2>&1 || useradd --system --create-home --shell /bin/sh --groups docker buildx
usermod --password '*' buildx
if [ -n "$AUTHORIZED_KEY" ]; then
  echo "$AUTHORIZED_KEY" | write_file /etc/ssh/buildx_authorized_keys 644
fi

write_file /etc/ssh/sshd_config.d/buildx-tunnel.conf 644 <<'END_OF_buildx-tunnel.conf'
# Root never logs in over ssh: operators log in as themselves (OS Login).
PermitRootLogin no

# The tunnel user of the Cloud Build: its sessions reach the Docker engine and nothing else.
Match User buildx
    AuthorizedKeysFile /etc/ssh/buildx_authorized_keys
    ForceCommand /usr/bin/docker --host unix:///var/run/docker.sock system dial-stdio
    DisableForwarding yes
    PermitTTY no
    PermitTunnel no
    PermitUserRC no
    X11Forwarding no
    AllowAgentForwarding no
END_OF_buildx-tunnel.conf
sshd -t && systemctl reload ssh

write_file /usr/local/sbin/buildx-idle-poweroff 755 <<'END_OF_buildx-idle-poweroff'
#!/bin/sh
# Power this VM off after IDLE_MINUTES without a session of the tunnel user. Run every minute by
# buildx-idle-poweroff.timer; its settings are in /etc/default/buildx-idle-poweroff.
set -eu
IDLE_MINUTES=${IDLE_MINUTES:-20}
TUNNEL_USER=${TUNNEL_USER:-buildx}
STATE=${STATE:-/run/buildx-idle-since}
DOCKER_SOCKET=${DOCKER_SOCKET:-/var/run/docker.sock}
POWEROFF=${POWEROFF:-systemctl poweroff}
now=$(date +%s)
if pgrep -u "$TUNNEL_USER" >/dev/null 2>&1; then
  rm -f "$STATE"
  echo "busy: $TUNNEL_USER has a session open"
  exit 0
fi
[ -s "$STATE" ] || echo "$now" > "$STATE"
since=$(cat "$STATE")
idle=$((now - since))
if [ "$idle" -lt $((IDLE_MINUTES * 60)) ]; then
  echo "idle for $((idle / 60)) of $IDLE_MINUTES minutes"
  exit 0
fi
echo "idle for $((idle / 60)) minutes: powering off"
rm -f "$STATE"
# The leases of pipelines that were cancelled: nothing uses the VM once it is off.
for lease in $(docker --host "unix://$DOCKER_SOCKET" volume ls --quiet \
    --filter label=dev.multi-arch-docker.lease 2>/dev/null); do
  docker --host "unix://$DOCKER_SOCKET" volume rm "$lease" >/dev/null 2>&1 || true
done
exec $POWEROFF
END_OF_buildx-idle-poweroff
echo "IDLE_MINUTES=${IDLE_MINUTES:-20}" | write_file /etc/default/buildx-idle-poweroff 644
printf '%s\n' '[Unit]' 'Description=Power off the builder after its idle minutes' \
  '[Service]' 'Type=oneshot' 'EnvironmentFile=-/etc/default/buildx-idle-poweroff' \
  'ExecStart=/usr/local/sbin/buildx-idle-poweroff' \
  | write_file /etc/systemd/system/buildx-idle-poweroff.service 644
printf '%s\n' '[Unit]' 'Description=Look for builds every minute' \
  '[Timer]' 'OnBootSec=5min' 'OnUnitActiveSec=1min' '[Install]' 'WantedBy=timers.target' \
  | write_file /etc/systemd/system/buildx-idle-poweroff.timer 644
systemctl daemon-reload
systemctl enable --now buildx-idle-poweroff.timer
