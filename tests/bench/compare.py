#!/usr/bin/env python3
"""Side-by-side benchmarks: the sansh CLI against OpenSSH's ssh client (and
asyncssh where it applies), in one run, against the same peers on 127.0.0.1.

Every figure is a median of at least five runs, printed with its ratio to
the peer measured in the same run, so a busy machine shifts both sides:

  download     `head -c 1G /dev/zero` from a private sshd, stdout to
               /dev/null: client CPU seconds per GiB (user + system, from
               wait4) and throughput, per cipher;
  upload       1 GiB into `cat > /dev/null` on the same sshd, the client's
               stdin a pipe from `head -c 1G /dev/zero` (a process of its
               own: wait4 counts only the client's CPU), the same figures;
  connect      TCP connect + key exchange + authentication + `true`;
  pooled       `true` on an open connection: `sansh --repeat 200` (p50)
               against `ssh -S sock host true` over a ControlMaster (and
               asyncssh's `conn.run('true')` when asyncssh is installed);
  idle memory  RSS growth per idle authenticated connection in one process
               holding 1,000 of them, against the sansh server role
               (examples/idle_connections.rs), beside asyncssh's client.

Run from the repository root (tests/bench/run.sh builds first):
    python3 tests/bench/compare.py [--runs 5] [--quick] [--only SECTION ...]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SANSH = ROOT / "target/release/sansh"
IDLE = ROOT / "target/release/examples/idle_connections"
CIPHERS = ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"{what} did not listen on 127.0.0.1:{port} within 10 s")


BENCH_USER = "sansh-bench"


def ensure_bench_user() -> None:
    """A user whose shell is /bin/sh: root's login shell here may run slow
    start-up files (pyenv init costs ~100 ms per command), which would swamp
    the per-command figures of both clients alike."""
    if subprocess.run(["id", BENCH_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--create-home", "--shell", "/bin/sh", BENCH_USER], check=True)
    # sshd without PAM refuses locked accounts ('!'); '*' is no password, unlocked.
    subprocess.run(["usermod", "-p", "*", BENCH_USER], check=True)


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class Sshd:
    """A private OpenSSH sshd on 127.0.0.1, authorizing one client key."""

    def __init__(self, tmp: Path, client_pub: Path):
        self.dir = tmp / "sshd"
        self.dir.mkdir()
        keygen(self.dir / "host_ed25519")
        shutil.copy(client_pub, self.dir / "authorized_keys")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        d = self.dir
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n"
            f"PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nLogLevel ERROR\nMaxSessions 20\nMaxStartups 100\n"
        )
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")]
        )
        wait_port(self.port, self.proc, "sshd")
        host_pub = (d / "host_ed25519.pub").read_text().split()
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def timed(argv: list[str], env: dict[str, str], stdout=subprocess.DEVNULL,
          stdin=subprocess.DEVNULL) -> tuple[float, float, str]:
    """Runs argv; returns (wall seconds, client CPU seconds, stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env)
    # wait4 gives this child's own rusage (not its exited children's).
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{argv[0]} failed ({code}): {' '.join(argv)}\n{stderr}")
    return wall, usage.ru_utime + usage.ru_stime, stderr


def timed_upload(argv: list[str], env: dict[str, str], size: str) -> tuple[float, float, str]:
    """Runs argv with `head -c SIZE /dev/zero` piped into its stdin; the
    producer is a sibling, not a child, so the client's wait4 rusage leaves
    its CPU out. head must end cleanly: the client read all of it."""
    feed = subprocess.Popen(["head", "-c", size, "/dev/zero"], stdout=subprocess.PIPE)
    try:
        result = timed(argv, env, stdin=feed.stdout)
    finally:
        feed.stdout.close()
        code = feed.wait()
    if code != 0:
        sys.exit(f"the upload's producer failed ({code}): {argv[0]} stopped reading its stdin")
    return result


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "n/a"


def parse_ms(text: str, key: str) -> float:
    m = re.search(rf"{key} ([0-9.]+) ms", text)
    if not m:
        sys.exit(f"no {key} in: {text}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5, help="runs per figure (medians; at least 5)")
    ap.add_argument("--quick", action="store_true",
                    help="64 MiB downloads and uploads, 100 idle connections (smoke test)")
    sections = ("downloads", "uploads", "connect", "pooled", "memory")
    ap.add_argument("--only", choices=sections, action="append",
                    help="run only this section (repeatable); default: all")
    args = ap.parse_args()
    want = set(args.only or sections)
    if args.runs < 5 and not args.quick:
        sys.exit("--runs must be at least 5 (medians of five or more)")
    for binary in (SANSH, IDLE):
        if not binary.exists():
            sys.exit(f"{binary} is missing: run tests/bench/run.sh (it builds first)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    size = "64M" if args.quick else "1G"
    gib = (64 / 1024) if args.quick else 1.0
    idle_n = 100 if args.quick else 1000

    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    tmp = Path(tempfile.mkdtemp(prefix="sansh-bench-"))
    # sshd reads authorized_keys as the (unprivileged) bench user.
    tmp.chmod(0o755)
    rows: list[tuple[str, str, str, str]] = []
    try:
        keygen(tmp / "id_ed25519")
        sshd = Sshd(tmp, tmp / "id_ed25519.pub")
        common = [
            "-p", str(sshd.port), "-i", str(tmp / "id_ed25519"),
            "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
        ]
        ssh = ["ssh", "-F", "/dev/null", "-o", "IdentitiesOnly=yes", *common]
        sansh = [str(SANSH), *common]
        ensure_bench_user()
        target = f"{BENCH_USER}@127.0.0.1"
        print(f"sshd: {subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}, "
              f"port {sshd.port}; {args.runs} runs per figure", flush=True)

        # Downloads and uploads, interleaved so drift hits both clients alike.
        transfers = (("download", "downloads", f"head -c {size} /dev/zero"),
                     ("upload", "uploads", "cat > /dev/null"))
        for what, section, command in transfers:
            for cipher in CIPHERS if section in want else ():
                cpu = {"ssh": [], "sansh": []}
                rate = {"ssh": [], "sansh": []}
                for _ in range(args.runs):
                    for name, argv in (("ssh", ssh), ("sansh", sansh)):
                        run = [*argv, "-c", cipher, target, command]
                        wall, secs, _ = timed_upload(run, env, size) if what == "upload" else timed(run, env)
                        cpu[name].append(secs / gib)
                        rate[name].append(gib * 1024 / wall)
                short = cipher.split("@")[0]
                rows.append((f"{what} {size}, {short}: client CPU s/GiB",
                             f"{med(cpu['sansh']):.2f}", f"{med(cpu['ssh']):.2f} (ssh)",
                             ratio(med(cpu["sansh"]), med(cpu["ssh"]))))
                rows.append((f"{what} {size}, {short}: MiB/s",
                             f"{med(rate['sansh']):.0f}", f"{med(rate['ssh']):.0f} (ssh)",
                             ratio(med(rate["sansh"]), med(rate["ssh"]))))
                print(f"  {rows[-2]}\n  {rows[-1]}", flush=True)

        # Connect + kex + auth + `true`.
        lat = {"ssh": [], "sansh": []}
        for _ in range(max(args.runs, 10) if "connect" in want else 0):
            for name, argv in (("ssh", ssh), ("sansh", sansh)):
                wall, _, _ = timed([*argv, target, "true"], env)
                lat[name].append(wall * 1000)
        if "connect" in want:
            rows.append(("connect + auth + `true`: ms", f"{med(lat['sansh']):.1f}", f"{med(lat['ssh']):.1f} (ssh)",
                         ratio(med(lat["sansh"]), med(lat["ssh"]))))
            print(f"  {rows[-1]}", flush=True)
        if "pooled" in want:
            pooled(ssh, sansh, target, tmp, sshd, env, args.runs, rows)
        sshd.stop()
        if "memory" in want:
            memory(tmp, idle_n, args.runs, rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| measure | sansh | peer | sansh / peer |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")


def pooled(ssh, sansh, target, tmp, sshd, env, runs, rows) -> None:
    # `true` on an open connection: --repeat against a ControlMaster.
    sock = tmp / "cm.sock"
    subprocess.run([*ssh, "-M", "-S", str(sock), "-o", "ControlPersist=yes", "-f", "-N", target],
                   check=True, env=env)
    try:
        ours, cm = [], []
        for _ in range(runs):
            _, _, err = timed([*sansh, "--repeat", "200", target, "true"], env)
            ours.append(parse_ms(err, "p50"))
            samples = []
            for _ in range(200):
                wall, _, _ = timed([*ssh, "-S", str(sock), target, "true"], env)
                samples.append(wall * 1000)
            cm.append(med(samples))
    finally:
        subprocess.run([*ssh, "-S", str(sock), "-O", "exit", target], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows.append(("pooled `true` (p50 of 200): ms", f"{med(ours):.2f}", f"{med(cm):.2f} (ControlMaster)",
                 ratio(med(ours), med(cm))))
    print(f"  {rows[-1]}", flush=True)
    asyncssh_exec = asyncssh_pooled(sshd.port, tmp / "id_ed25519", runs)
    if asyncssh_exec is not None:
        rows.append(("pooled `true` (p50 of 200): ms", f"{med(ours):.2f}", f"{asyncssh_exec:.2f} (asyncssh)",
                     ratio(med(ours), asyncssh_exec)))
        print(f"  {rows[-1]}", flush=True)


def memory(tmp, idle_n, runs, rows) -> None:
    # Idle memory against the sansh server role.
    server = subprocess.Popen([str(IDLE), "server", str(tmp / "id_ed25519.pub")],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        per = []
        for _ in range(runs):
            out = subprocess.run([str(IDLE), "client", str(port), str(idle_n)], check=True,
                                 capture_output=True, text=True).stdout
            per.append(float(re.search(r"([0-9.]+) KiB per connection", out).group(1)))
        theirs = asyncssh_idle(port, tmp / "id_ed25519", idle_n, runs)
        rows.append((f"RSS per idle connection ({idle_n} in one process): KiB", f"{med(per):.1f}",
                     f"{theirs:.1f} (asyncssh)" if theirs else "n/a",
                     ratio(med(per), theirs) if theirs else "n/a"))
        print(f"  {rows[-1]}", flush=True)
    finally:
        server.terminate()
        server.wait()


ASYNCSSH_POOLED = r"""
import asyncio, statistics, sys, time, asyncssh
async def main(port, key, runs):
    async with asyncssh.connect("127.0.0.1", port, username=sys.argv[4], client_keys=[key],
                                known_hosts=None, agent_path=None) as conn:
        await conn.run("true", check=True)
        p50s = []
        for _ in range(runs):
            samples = []
            for _ in range(200):
                t = time.perf_counter()
                await conn.run("true", check=True)
                samples.append((time.perf_counter() - t) * 1000)
            p50s.append(statistics.median(samples))
        print(statistics.median(p50s))
asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""

ASYNCSSH_IDLE = r"""
import asyncio, sys, asyncssh
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
async def main(port, key, n):
    opts = dict(username="bench", client_keys=[key], known_hosts=None, agent_path=None)
    first = await asyncssh.connect("127.0.0.1", port, **opts)
    await first.run("true")
    await asyncio.sleep(0.2)
    before = rss()
    conns = [await asyncssh.connect("127.0.0.1", port, **opts) for _ in range(n)]
    await asyncio.sleep(1)
    print((rss() - before) / n)
asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""


# tests/setup.sh installs asyncssh into this virtualenv (Debian's Python
# refuses system-wide pip installs); otherwise this interpreter's.
VENV_PYTHON = Path("/opt/sansh-interop/venv/bin/python")
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def have_asyncssh() -> bool:
    return subprocess.run([PYTHON, "-c", "import asyncssh"], capture_output=True).returncode == 0


def asyncssh_pooled(port: int, key: Path, runs: int) -> float | None:
    if not have_asyncssh():
        print("  asyncssh not installed: no asyncssh column (pip install asyncssh)", flush=True)
        return None
    out = subprocess.run([PYTHON, "-c", ASYNCSSH_POOLED, str(port), str(key), str(runs), BENCH_USER],
                         check=True, capture_output=True, text=True).stdout
    return float(out)


def asyncssh_idle(port: int, key: Path, n: int, runs: int) -> float | None:
    if not have_asyncssh():
        return None
    per = []
    for _ in range(runs):
        out = subprocess.run([PYTHON, "-c", ASYNCSSH_IDLE, str(port), str(key), str(n)],
                             check=True, capture_output=True, text=True).stdout
        per.append(float(out))
    return med(per)


if __name__ == "__main__":
    main()
