//! `sansh --demo`: everything sansh is for, in one process, needing no
//! server on the machine. A sansh server role on 127.0.0.1 (fresh host key;
//! only a fresh client key gets in; exec runs `sh -c`) sits behind a
//! fault-injecting TCP proxy. The demo connects and authenticates, runs
//! commands over pooled channels, shows keepalive round trips, then has the
//! proxy black-hole the link: the keepalive notices, the client reconnects
//! with backoff, and work resumes. Unattended, well under 30 s.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use sansh::tokio::{
    ClientOptions, FaultMode, FaultProxy, HostKeyPolicy, Pool, ReconnectEvent, ReconnectingClient, Server,
    ServerOptions, Target,
};
use sansh::{Credential, HostKey, Jitter, PoolConfig, ReconnectConfig, ServerConfig};
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{HashAlg, PrivateKey};
use tokio::time::{Instant, timeout};

/// Keepalive of the demo's client: a probe every second, two unanswered
/// and the link is declared dead (about 3 s after it goes silent).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_COUNT_MAX: u32 = 2;

/// The whole demo must finish within this.
const BUDGET: Duration = Duration::from_secs(30);

pub async fn run() -> i32 {
    let start = Instant::now();
    match timeout(BUDGET, demo(start)).await {
        Ok(Ok(())) => {
            say(start, &format!("done in {:.1} s", start.elapsed().as_secs_f64()));
            0
        }
        Ok(Err(e)) => {
            eprintln!("sansh --demo failed: {e}");
            1
        }
        Err(_) => {
            eprintln!("sansh --demo failed: not finished within {BUDGET:?}");
            1
        }
    }
}

fn say(start: Instant, line: &str) {
    println!("[{:5.2}s] {line}", start.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
}

/// A fresh ed25519 key from the OS's randomness.
fn fresh_key(comment: &str) -> Result<PrivateKey, String> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| format!("OS randomness: {e}"))?;
    let key = PrivateKey::new(KeypairData::Ed25519(Ed25519Keypair::from_seed(&seed)), comment)
        .map_err(|e| format!("key: {e}"))?;
    Ok(key)
}

/// Waits for the first event `want` accepts, printing every event.
async fn wait_event(
    start: Instant,
    events: &mut tokio::sync::broadcast::Receiver<ReconnectEvent>,
    limit: Duration,
    want: impl Fn(&ReconnectEvent) -> bool,
) -> Result<ReconnectEvent, String> {
    let deadline = Instant::now() + limit;
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| format!("no such event within {limit:?}"))?
            .map_err(|e| format!("events: {e}"))?;
        say(start, &describe(&e));
        if want(&e) {
            return Ok(e);
        }
    }
}

fn describe(e: &ReconnectEvent) -> String {
    match e {
        ReconnectEvent::Connected { attempt } => {
            format!("client: connected and authenticated (attempt {attempt})")
        }
        ReconnectEvent::Lost { reason } => format!("client: connection lost: {reason}"),
        ReconnectEvent::DialFailed { attempt, error } => format!("client: attempt {attempt} failed: {error}"),
        ReconnectEvent::Retrying { attempt, delay } => {
            format!(
                "client: attempt {attempt} in {} ms (exponential backoff, full jitter)",
                delay.as_millis()
            )
        }
        ReconnectEvent::GaveUp { reason, attempts } => {
            format!("client: gave up after {attempts} attempts: {reason}")
        }
        other => format!("client: {other:?}"),
    }
}

async fn demo(start: Instant) -> Result<(), String> {
    println!("sansh --demo: a sansh server, a fault-injecting proxy and a sansh client, all on 127.0.0.1\n");

    // The server: fresh host key, one authorized client key.
    let host = fresh_key("sansh-demo-host")?;
    let user = fresh_key("sansh-demo-user")?;
    let host_fp = host.public_key().fingerprint(HashAlg::Sha256);
    let config = ServerConfig {
        host_keys: vec![HostKey::new(host.clone()).map_err(|e| format!("host key: {e}"))?],
        ..ServerConfig::default()
    };
    let options = ServerOptions::with_authorized_keys(config, vec![user.public_key().clone()]);
    let server = Server::bind("127.0.0.1:0".parse().expect("an address"), options)
        .await
        .map_err(|e| format!("bind the server: {e}"))?;
    let server_addr = server.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(server.run());
    let proxy = FaultProxy::start(server_addr).await.map_err(|e| format!("start the proxy: {e}"))?;
    let port = proxy.local_addr().port();
    say(start, &format!("server: listening on {server_addr}, host key {host_fp}"));
    say(start, &format!("proxy:  127.0.0.1:{port} -> {server_addr}, passing traffic"));

    // The client trusts exactly that host key (a known_hosts file of its own).
    let dir = std::env::temp_dir().join(format!("sansh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let known_hosts: PathBuf = dir.join("known_hosts");
    let line = format!("[127.0.0.1]:{port} {}\n", host.public_key().to_openssh().map_err(|e| e.to_string())?);
    std::fs::write(&known_hosts, line).map_err(|e| format!("{}: {e}", known_hosts.display()))?;
    let mut options = ClientOptions::new("demo");
    options.config.credentials = vec![Credential::PrivateKey(user)];
    options.host_key_policy = HostKeyPolicy::Strict { known_hosts: known_hosts.clone() };
    options.use_agent = false;
    options.connect_timeout = Some(Duration::from_secs(2));
    options.config.transport.keepalive.probe_interval = Some(PROBE_INTERVAL);
    options.config.transport.keepalive.probe_count_max = PROBE_COUNT_MAX;
    let result = scenario(start, port, options, &proxy).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn scenario(
    start: Instant,
    port: u16,
    options: ClientOptions,
    proxy: &FaultProxy,
) -> Result<(), String> {
    // 1. Connect and authenticate, with reconnection on.
    println!("\n== 1. connect, verify the host key (strict known_hosts), authenticate with the fresh key");
    let reconnect = ReconnectConfig {
        initial_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(4),
        max_retries: Some(8),
        jitter: Jitter::Full,
        ..ReconnectConfig::default()
    };
    let dial = Instant::now();
    let client = ReconnectingClient::start("127.0.0.1", port, options.clone(), reconnect);
    let mut events = client.events();
    wait_event(start, &mut events, Duration::from_secs(5), |e| matches!(e, ReconnectEvent::Connected { .. }))
        .await?;
    say(
        start,
        &format!("TCP + key exchange + authentication took {:.1} ms", dial.elapsed().as_secs_f64() * 1e3),
    );
    let out = client.exec("uname -sr; id -un").await.map_err(|e| e.to_string())?;
    say(
        start,
        &format!(
            "exec `uname -sr; id -un`: {}",
            String::from_utf8_lossy(&out.stdout).trim().replace('\n', " | ")
        ),
    );

    // 2. Pooled channels: eight concurrent commands, at most two connections.
    println!("\n== 2. eight concurrent commands through a pool (2 connections x 4 channels)");
    let pool = Pool::new(PoolConfig {
        max_connections: 2,
        max_connections_per_key: 2,
        max_channels_per_connection: 4,
        ..PoolConfig::default()
    });
    let target = Target::new("127.0.0.1", port, options.clone());
    let t = Instant::now();
    let jobs: Vec<_> = (1..=8)
        .map(|i| {
            let (pool, target) = (pool.clone(), target.clone());
            tokio::spawn(async move {
                pool.exec(&target, &format!("sleep 0.3; echo job {i} done by pid $$")).await
            })
        })
        .collect();
    for job in jobs {
        let out = job.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        say(start, &format!("pool: {}", String::from_utf8_lossy(&out.stdout).trim()));
    }
    let s = pool.stats();
    say(
        start,
        &format!(
            "pool: 8 commands in {:.0} ms over {} connections; {} of {} leases reused a connection ({:.0}% reuse)",
            t.elapsed().as_secs_f64() * 1e3,
            s.dials,
            s.leases_reused,
            s.leases_granted,
            s.reuse_ratio() * 100.0
        ),
    );
    for _ in 0..4 {
        pool.exec(&target, "true").await.map_err(|e| e.to_string())?;
    }
    let s = pool.stats();
    say(
        start,
        &format!(
            "pool: 4 more, one after another: still {} dials, {} leases reused",
            s.dials, s.leases_reused
        ),
    );
    pool.close_all();

    // 3. Keepalive round trips on an idle connection.
    println!("\n== 3. idle: keepalive probes every {PROBE_INTERVAL:?} measure the round trip");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let c = client.client().await.map_err(|e| e.to_string())?;
    let st = c.stats().await.map_err(|e| e.to_string())?;
    let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.3} ms", d.as_secs_f64() * 1e3));
    say(
        start,
        &format!(
            "keepalive: {} probes sent, {} answered; RTT last {}, smoothed {}, min {}",
            st.probes_sent,
            st.probes_answered,
            ms(st.rtt.last),
            ms(st.rtt.smoothed),
            ms(st.rtt.min)
        ),
    );
    if st.probes_answered == 0 {
        return Err("no keepalive probe was answered".into());
    }

    // 4. The link goes silent: no FIN, no RST, packets just vanish.
    println!(
        "\n== 4. the proxy black-holes the link; expect detection within {:?} x ({PROBE_COUNT_MAX} + 1)",
        PROBE_INTERVAL
    );
    proxy.set(FaultMode::BlackHole);
    let silent = Instant::now();
    say(start, "proxy: black hole on (bytes swallowed both ways, sockets left open)");
    wait_event(start, &mut events, Duration::from_secs(6), |e| matches!(e, ReconnectEvent::Lost { .. }))
        .await?;
    say(start, &format!("dead link detected {:.2} s after it went silent", silent.elapsed().as_secs_f64()));

    // 5. Reconnect with backoff; the first tries still hit the black hole.
    println!("\n== 5. reconnect with backoff (new dials time out while the black hole lasts)");
    wait_event(start, &mut events, Duration::from_secs(5), |e| matches!(e, ReconnectEvent::Retrying { .. }))
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(FaultMode::Pass);
    say(start, "proxy: passing traffic again");
    let back = Instant::now();
    wait_event(start, &mut events, Duration::from_secs(12), |e| {
        matches!(e, ReconnectEvent::Connected { .. })
    })
    .await?;
    say(start, &format!("reconnected {:.2} s after the link came back", back.elapsed().as_secs_f64()));

    // 6. Work resumes.
    println!("\n== 6. work resumes on the new connection");
    let out = client.exec("echo resumed on a fresh connection").await.map_err(|e| e.to_string())?;
    say(start, &format!("exec: {}", String::from_utf8_lossy(&out.stdout).trim()));
    let out = pool.exec(&target, "echo the pool dials again too").await.map_err(|e| e.to_string())?;
    say(start, &format!("pool: {}", String::from_utf8_lossy(&out.stdout).trim()));

    // 7. Stats, once the new connection has answered a probe.
    println!("\n== 7. stats");
    tokio::time::sleep(PROBE_INTERVAL + Duration::from_millis(200)).await;
    let c = client.client().await.map_err(|e| e.to_string())?;
    let st = c.stats().await.map_err(|e| e.to_string())?;
    say(
        start,
        &format!(
            "current connection: {} B / {} packets sent, {} B / {} packets received, {} probes ({} answered), RTT min {}",
            st.bytes_sent,
            st.packets_sent,
            st.bytes_received,
            st.packets_received,
            st.probes_sent,
            st.probes_answered,
            ms(st.rtt.min)
        ),
    );
    let s = pool.stats();
    say(
        start,
        &format!(
            "pool: {} dials, {} evictions, {} leases granted ({} reused), {} ready, {} waiting",
            s.dials, s.evictions, s.leases_granted, s.leases_reused, s.ready, s.waiters
        ),
    );
    say(start, &format!("proxy: {} TCP connections carried in all", proxy.connections()));
    client.stop();
    Ok(())
}
