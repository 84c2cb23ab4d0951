#!/usr/bin/env bash
# Installs the real SSH peers the interop tests start on 127.0.0.1: OpenSSH's
# sshd, dropbear, TinySSH's tinysshd (run by ucspi-tcp's tcpserver), and
# asyncssh, paramiko and Twisted Conch (Python) in their own virtualenv.
# Idempotent; needs root (CI and the dev machines run as root). Any failure
# stops the script with a non-zero status.
set -euo pipefail

# Where the asyncssh, paramiko and conch peers live; tests/src/asyncssh.rs,
# tests/src/paramiko.rs and tests/src/conch.rs look here too.
VENV=/opt/sansh-interop/venv
# The asyncssh release the interop suites were written against.
ASYNCSSH_SPEC='asyncssh==2.24.*'
# And paramiko's (5.1: aes*-ctr, AES-GCM, every HMAC sansh has, strict kex).
PARAMIKO_SPEC='paramiko==5.1.*'
# And Twisted's, whose `twistd conch` is a peer (26.10: aes*-ctr with
# hmac-sha2/sha1, curve25519, every host key kind); the [conch] extra brings
# cryptography, bcrypt and appdirs.
TWISTED_SPEC='twisted[conch]==26.10.*'

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
[ -x /usr/sbin/dropbear ] && [ -x /usr/bin/dropbearkey ] || need+=(dropbear-bin)
[ -x /usr/sbin/tinysshd ] && [ -x /usr/sbin/tinysshd-makekey ] && [ -x /usr/sbin/tinysshd-printkey ] \
  || need+=(tinysshd)
[ -x /usr/bin/tcpserver ] || need+=(ucspi-tcp)
[ -x /usr/bin/python3 ] || need+=(python3)
# Debian's python3 is externally managed (PEP 668): asyncssh goes into a venv.
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's tinysshd enables a systemd socket on port 22 of every interface;
# the tests run their own on 127.0.0.1, so where systemd runs, switch it off.
if [ -d /run/systemd/system ] && systemctl is-enabled --quiet tinysshd.socket 2>/dev/null; then
  systemctl disable --now tinysshd.socket >/dev/null 2>&1 || true
fi
# sshd's privilege-separation directory (the tests also create it).
mkdir -p /run/sshd

if ! "$VENV/bin/python" -c 'import asyncssh, sys; sys.exit(not asyncssh.__version__.startswith("2.24."))' 2>/dev/null; then
  echo "setup: installing $ASYNCSSH_SPEC into $VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "$ASYNCSSH_SPEC"
fi
if ! "$VENV/bin/python" -c 'import paramiko, sys; sys.exit(not paramiko.__version__.startswith("5.1."))' 2>/dev/null; then
  echo "setup: installing $PARAMIKO_SPEC into $VENV"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "$PARAMIKO_SPEC"
fi
if ! "$VENV/bin/python" -c 'import twisted, twisted.conch.ssh.transport, sys; sys.exit(not twisted.__version__.startswith("26.10."))' 2>/dev/null \
  || [ ! -x "$VENV/bin/twistd" ]; then
  echo "setup: installing $TWISTED_SPEC into $VENV"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "$TWISTED_SPEC"
fi

echo "setup: sshd $(ssh -V 2>&1)"
echo "setup: $(/usr/sbin/dropbear -V 2>&1 | head -n1)"
# tinysshd has no version flag; dpkg knows (20230101-1 on Debian 12).
echo "setup: tinysshd $(dpkg-query -W -f='${Version}' tinysshd), ucspi-tcp $(dpkg-query -W -f='${Version}' ucspi-tcp)"
echo "setup: asyncssh $("$VENV/bin/python" -c 'import asyncssh; print(asyncssh.__version__)')"
echo "setup: paramiko $("$VENV/bin/python" -c 'import paramiko; print(paramiko.__version__)')"
echo "setup: twisted $("$VENV/bin/python" -c 'import twisted; print(twisted.__version__)')"
