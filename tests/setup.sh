#!/usr/bin/env bash
# Installs the real SSH peers the interop tests start on 127.0.0.1.
# Idempotent; needs root (CI and the dev machines run as root).
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# sshd's privilege-separation directory (the tests also create it).
mkdir -p /run/sshd
echo "setup: sshd $(ssh -V 2>&1)"
