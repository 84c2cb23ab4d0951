#!/usr/bin/env python3
"""An asyncssh SSH client for sansh's server interop tests.

Started by tests/tests/server_interop.rs with the venv tests/setup.sh makes.
It connects to 127.0.0.1:PORT, checks the server's host key against a
known_hosts file (OpenSSH format), authenticates with a key or a password,
runs one command with the given stdin, and prints `KEY value` lines on
stdout: EXIT_STATUS, EXIT_SIGNAL (or "-"), STDOUT_HEX and STDERR_HEX (the
command's output, hex-encoded), CIPHER and HOST_KEY (the server's, in
OpenSSH public key format). A failure prints `ERROR text` and exits 1.
"""

import argparse
import asyncio
import sys

import asyncssh


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--known-hosts", required=True)
    parser.add_argument("--key", help="private key file (OpenSSH format)")
    parser.add_argument("--password")
    parser.add_argument("--host-key-alg", help="the only server host key algorithm to accept")
    parser.add_argument("--cipher", help="the only cipher to offer")
    parser.add_argument("--command", required=True)
    parser.add_argument("--stdin-file", help="file whose content is the command's stdin")
    parser.add_argument("--rekey-bytes", type=int, help="rekey after this many bytes (asyncssh's rekey_bytes)")
    args = parser.parse_args()

    options = dict(
        port=args.port,
        username=args.user,
        known_hosts=args.known_hosts,
        client_keys=[args.key] if args.key else (),
        password=args.password,
        agent_path=None,
        preferred_auth="publickey" if args.key else "password",
    )
    if args.host_key_alg:
        options["server_host_key_algs"] = [args.host_key_alg]
    if args.cipher:
        options["encryption_algs"] = [args.cipher]
    if args.rekey_bytes:
        options["rekey_bytes"] = args.rekey_bytes
    stdin = None
    if args.stdin_file:
        with open(args.stdin_file, "rb") as f:
            stdin = f.read()

    try:
        async with asyncssh.connect("127.0.0.1", **options) as conn:
            result = await conn.run(args.command, input=stdin, encoding=None, check=False)
            host_key = conn.get_server_host_key().export_public_key("openssh").decode().split()
            print(f"EXIT_STATUS {result.exit_status}")
            print(f"EXIT_SIGNAL {result.exit_signal[0] if result.exit_signal else '-'}")
            print(f"STDOUT_HEX {result.stdout.hex()}")
            print(f"STDERR_HEX {result.stderr.hex()}")
            print(f"CIPHER {conn.get_extra_info('send_cipher')}")
            print(f"HOST_KEY {host_key[0]} {host_key[1]}", flush=True)
    except (OSError, asyncssh.Error) as e:
        print(f"ERROR {type(e).__name__}: {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
