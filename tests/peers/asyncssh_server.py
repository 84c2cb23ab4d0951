#!/usr/bin/env python3
"""An asyncssh SSH server on 127.0.0.1 for sansh's interop tests.

Started by tests/src/asyncssh.rs (with the venv tests/setup.sh makes). It
binds a port (0: the kernel's choice), prints "LISTENING <port>" on stdout
once it accepts connections, and serves until SIGTERM, when it kills the
commands it started and exits.

Sessions run their command (or `sh` without one) with `sh -c`, stdin,
stdout and stderr piped, or under a pseudo-terminal when the client asked
for one (window-change resizes it). Exit status and death by signal are
reported as exit-status / exit-signal. Local (direct-tcpip) and remote
(tcpip-forward) forwarding are allowed; unknown global requests such as
keepalive@openssh.com get REQUEST_FAILURE from asyncssh itself.
"""

import argparse
import asyncio
import fcntl
import os
import signal
import struct
import sys
import termios

import asyncssh

# Commands running now, so SIGTERM can take them down with the server.
CHILDREN = set()


def set_winsize(fd, cols, rows, xpixel, ypixel):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpixel, ypixel))


def become_tty_leader():
    """In the child after setsid: make stdin (the pty) the controlling
    terminal, so resizes deliver SIGWINCH like under sshd."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Server(asyncssh.SSHServer):
    def __init__(self, user, password):
        self.user = user
        self.password = password

    def begin_auth(self, username):
        return True

    def password_auth_supported(self):
        return self.password is not None

    def validate_password(self, username, password):
        return username == self.user and password == self.password

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        # direct-tcpip (ssh -L): asyncssh connects to the target itself.
        return True

    def server_requested(self, listen_host, listen_port):
        # tcpip-forward (ssh -R): asyncssh listens and opens forwarded-tcpip.
        return True


async def pump_to_channel(reader, writer):
    """Copies a child's output to the channel until the child closes it."""
    while True:
        try:
            data = await reader.read(65536)
        except OSError:
            # A pty master reads EIO once the last slave user is gone.
            return
        if not data:
            return
        writer.write(data)
        await writer.drain()


async def handle_process(process):
    command = process.command if process.command is not None else "sh"
    term = process.get_terminal_type()
    loop = asyncio.get_running_loop()
    env = dict(os.environ)
    master = None
    if term is not None:
        env["TERM"] = term
        master, slave = os.openpty()
        cols, rows, xpixel, ypixel = process.get_terminal_size()
        set_winsize(slave, cols or 80, rows or 24, xpixel, ypixel)
        child = await asyncio.create_subprocess_exec(
            "sh", "-c", command, stdin=slave, stdout=slave, stderr=slave,
            env=env, start_new_session=True, preexec_fn=become_tty_leader)
        os.close(slave)
        out_reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(out_reader), os.fdopen(master, "rb", buffering=0))
        in_fd = os.dup(master)
        outputs = [pump_to_channel(out_reader, process.stdout)]
    else:
        child = await asyncio.create_subprocess_exec(
            "sh", "-c", command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        in_fd = None
        outputs = [pump_to_channel(child.stdout, process.stdout),
                   pump_to_channel(child.stderr, process.stderr)]
    CHILDREN.add(child)

    async def pump_input():
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as change:
                if master is not None:
                    set_winsize(in_fd, change.width, change.height, change.pixwidth, change.pixheight)
                continue
            except asyncssh.SignalReceived as received:
                try:
                    child.send_signal(getattr(signal, "SIG" + received.signal))
                except (AttributeError, ProcessLookupError):
                    pass
                continue
            except asyncssh.BreakReceived:
                continue
            except (asyncssh.Error, OSError):
                data = b""
            if not data:
                # EOF: close the child's stdin (a pty has no EOF to pass on).
                if in_fd is None:
                    child.stdin.close()
                return
            try:
                if in_fd is None:
                    child.stdin.write(data)
                    await child.stdin.drain()
                else:
                    await write_all_nonblocking(in_fd, data)
            except (BrokenPipeError, ConnectionResetError, OSError):
                return

    input_task = asyncio.ensure_future(pump_input())
    try:
        await asyncio.gather(*outputs)
        status = await child.wait()
    except (asyncssh.Error, OSError):
        # The channel went away under us: take the command down with it.
        kill_child(child)
        status = await child.wait()
    finally:
        input_task.cancel()
        CHILDREN.discard(child)
        if in_fd is not None:
            os.close(in_fd)
    try:
        if status < 0:
            process.exit_with_signal(signal.Signals(-status).name[3:])
        else:
            process.exit(status)
    except OSError:
        pass


async def write_all_nonblocking(fd, data):
    """Writes to the pty master, which the read side made non-blocking."""
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            await asyncio.sleep(0.005)


def kill_child(child):
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host-key", action="append", required=True)
    parser.add_argument("--authorized-keys", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password")
    parser.add_argument("--keepalive-interval", type=float, default=0)
    parser.add_argument("--keepalive-count-max", type=int, default=3)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()

    import logging
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    server = await asyncssh.create_server(
        lambda: Server(args.user, args.password), "127.0.0.1", args.port,
        server_host_keys=args.host_key,
        authorized_client_keys=args.authorized_keys,
        process_factory=handle_process,
        encoding=None,
        # Raw bytes to the pty: asyncssh's own line editor would echo and
        # buffer input itself.
        line_editor=False,
        keepalive_interval=args.keepalive_interval,
        keepalive_count_max=args.keepalive_count_max,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for child in list(CHILDREN):
        kill_child(child)
    # Nothing to flush: leave without waiting for connections to wind down.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
