#!/usr/bin/env python3
"""A paramiko SSH server on 127.0.0.1 for sansh's interop tests.

Started by tests/src/paramiko.rs (with the venv tests/setup.sh makes). It
binds a port (0: the kernel's choice), prints "LISTENING <port>" on stdout
once it accepts connections, and serves until SIGTERM, when it kills the
commands it started and exits.

One user logs in with a password or with a key listed in the authorized
keys file. Sessions allow `exec` only: the command runs under `/bin/sh -c`
with stdin, stdout and stderr piped through the channel, then its exit
status is sent and the channel closed. `--rekey-bytes N` makes paramiko
start a key re-exchange after every N bytes in either direction; `--macs`
restricts the MACs it offers.
"""

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

import paramiko
from paramiko.packet import Packetizer

# Commands running now, so SIGTERM can take them down with the server.
CHILDREN = set()
CHILDREN_LOCK = threading.Lock()


class Server(paramiko.ServerInterface):
    def __init__(self, user, password, authorized):
        self.user = user
        self.password = password
        self.authorized = authorized

    def get_allowed_auths(self, username):
        return "password,publickey"

    def check_auth_password(self, username, password):
        if username == self.user and password == self.password:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username, key):
        if username == self.user and (key.get_name(), key.get_base64()) in self.authorized:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        # Called on paramiko's transport thread: the command runs on its own.
        command = command.decode("utf-8", "replace") if isinstance(command, bytes) else command
        threading.Thread(target=run_command, args=(channel, command), daemon=True).start()
        return True


def copy_out(stream, send):
    """Copies a child's output stream to the channel until it closes."""
    while True:
        data = os.read(stream.fileno(), 65536)
        if not data:
            return
        send(data)


def copy_in(channel, stdin):
    """Copies channel data to the child's stdin until the client's EOF."""
    try:
        while True:
            data = channel.recv(65536)
            if not data:
                break
            stdin.write(data)
            stdin.flush()
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def run_command(channel, command):
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as e:
        channel.sendall_stderr(f"cannot run /bin/sh: {e}\n".encode())
        channel.send_exit_status(127)
        channel.close()
        return
    with CHILDREN_LOCK:
        CHILDREN.add(proc)
    threading.Thread(target=copy_in, args=(channel, proc.stdin), daemon=True).start()
    out = threading.Thread(target=copy_out, args=(proc.stdout, channel.sendall))
    err = threading.Thread(target=copy_out, args=(proc.stderr, channel.sendall_stderr))
    out.start()
    err.start()
    out.join()
    err.join()
    code = proc.wait()
    with CHILDREN_LOCK:
        CHILDREN.discard(proc)
    # A death by signal is reported as the shell would (paramiko has no
    # exit-signal call).
    channel.send_exit_status(code if code >= 0 else 128 - code)
    channel.shutdown_write()
    channel.close()


def serve_connection(sock, host_keys, server, macs):
    transport = paramiko.Transport(sock)
    for key in host_keys:
        transport.add_server_key(key)
    if macs:
        transport.get_security_options().digests = macs
    try:
        transport.start_server(server=server)
    except (paramiko.SSHException, EOFError, OSError) as e:
        logging.info("handshake failed: %s", e)
        transport.close()
        return
    # Channels are served by their own threads; this one accepts them and
    # keeps them referenced (paramiko closes a channel that is garbage
    # collected, which would happen before its exec request arrives).
    channels = []
    while transport.is_active():
        channel = transport.accept(timeout=1)
        if channel is not None:
            channels = [c for c in channels if not c.closed] + [channel]
    transport.close()


def load_authorized(path):
    authorized = set()
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and not line.startswith("#"):
                authorized.add((parts[0], parts[1]))
    return authorized


def load_host_key(path):
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(path)
        except (paramiko.SSHException, ValueError):
            continue
    raise SystemExit(f"cannot load host key {path}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host-key", action="append", required=True)
    p.add_argument("--authorized-keys", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--rekey-bytes", type=int)
    p.add_argument("--macs", help="comma-separated MACs to offer (default: paramiko's)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args()
    logging.basicConfig(stream=sys.stderr, level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    if args.rekey_bytes:
        Packetizer.REKEY_BYTES = args.rekey_bytes

    def stop(signum, frame):
        with CHILDREN_LOCK:
            for proc in CHILDREN:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    host_keys = [load_host_key(path) for path in args.host_key]
    macs = tuple(args.macs.split(",")) if args.macs else None
    server = Server(args.user, args.password, load_authorized(args.authorized_keys))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(16)
    print(f"LISTENING {listener.getsockname()[1]}", flush=True)
    logging.info("paramiko %s listening on %s", paramiko.__version__, listener.getsockname())
    while True:
        sock, addr = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_connection, args=(sock, host_keys, server, macs), daemon=True).start()


if __name__ == "__main__":
    main()
