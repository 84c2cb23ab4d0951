//! `-L` and `-R`: `[bind_address:]port:host:hostport` (IPv6 addresses in
//! brackets, or `/` as the separator), set up with the adapter's
//! `Client::local_forward` / `Client::remote_forward`.

use std::net::SocketAddr;

use sansh::tokio::{Client, LocalForward, RemoteForward};

/// One forwarding as written on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardSpec {
    /// The bind address, if given (`*` or empty: all interfaces).
    pub bind: Option<String>,
    /// The listening port (0: any).
    pub port: u16,
    /// Where connections go.
    pub host: String,
    /// Their port.
    pub host_port: u16,
}

/// Splits on `sep`, keeping `[...]` together (brackets removed).
fn fields(spec: &str, sep: char) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut bracket = false;
    let mut was_bracketed = false;
    for c in spec.chars() {
        match c {
            '[' if cur.is_empty() && !bracket => {
                bracket = true;
                was_bracketed = true;
            }
            ']' if bracket => bracket = false,
            c if c == sep && !bracket => {
                out.push(std::mem::take(&mut cur));
                was_bracketed = false;
            }
            c => {
                if was_bracketed && !bracket {
                    return Err(format!("unexpected '{c}' after ']'"));
                }
                cur.push(c);
            }
        }
    }
    if bracket {
        return Err("unclosed '['".into());
    }
    out.push(cur);
    Ok(out)
}

fn port(s: &str) -> Result<u16, String> {
    s.parse::<u16>().map_err(|_| format!("bad port '{s}'"))
}

impl ForwardSpec {
    /// Parses `[bind_address:]port:host:hostport`.
    pub fn parse(spec: &str) -> Result<ForwardSpec, String> {
        let sep = if spec.contains('/') && !spec.contains('[') { '/' } else { ':' };
        let f = fields(spec, sep)?;
        let (bind, rest) = match f.len() {
            3 => (None, &f[..]),
            4 => (Some(f[0].clone()), &f[1..]),
            _ => return Err("expected [bind_address:]port:host:hostport".into()),
        };
        let spec =
            ForwardSpec { bind, port: port(&rest[0])?, host: rest[1].clone(), host_port: port(&rest[2])? };
        if spec.host.is_empty() {
            return Err("empty host".into());
        }
        if spec.host_port == 0 {
            return Err("the target port cannot be 0".into());
        }
        Ok(spec)
    }

    /// The local address `-L` listens on: loopback unless a bind address
    /// says otherwise (`*` or empty: every interface), as OpenSSH; with
    /// GatewayPorts (`-g`) every interface when none is given.
    pub async fn local_addr(&self, gateway_ports: bool) -> Result<SocketAddr, String> {
        let host = match self.bind.as_deref() {
            None if gateway_ports => "0.0.0.0",
            None | Some("localhost") => "127.0.0.1",
            Some("" | "*") => "0.0.0.0",
            Some(h) => h,
        };
        let mut addrs = tokio::net::lookup_host((host, self.port))
            .await
            .map_err(|e| format!("cannot resolve bind address {host}: {e}"))?;
        addrs.next().ok_or_else(|| format!("cannot resolve bind address {host}"))
    }

    /// The bind host sent in `tcpip-forward` (OpenSSH's choice: `localhost`
    /// unless given; `*` means every address, sent as the empty string).
    pub fn remote_bind(&self) -> &str {
        match self.bind.as_deref() {
            None => "localhost",
            Some("*") => "",
            Some(h) => h,
        }
    }
}

/// The forwardings that are up; dropping them stops them.
#[derive(Debug, Default)]
pub struct Forwards {
    #[allow(dead_code)] // held for their Drop
    local: Vec<LocalForward>,
    #[allow(dead_code)]
    remote: Vec<RemoteForward>,
    /// Remote forwards asked for again after a refusal (`--reconnect`).
    retrying: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Forwards {
    fn drop(&mut self) {
        for t in &self.retrying {
            t.abort();
        }
    }
}

/// Sets up every `-L` and `-R`. Failures are warnings, as in ssh, unless
/// ExitOnForwardFailure is set: then the first one is returned as an error.
/// With `retry_refused` (`--reconnect`), a refused `-R` is asked for again in
/// the background while the connection lives: after a reconnect the server
/// may still hold the port for the connection that died.
pub async fn setup(
    client: &Client,
    a: &crate::args::Args,
    exit_on_failure: bool,
    retry_refused: bool,
) -> Result<Forwards, String> {
    let (local, remote) = (&a.local, &a.remote);
    let mut fw = Forwards::default();
    for spec in local {
        let r = async {
            let addr = spec.local_addr(a.gateway_ports()).await?;
            client
                .local_forward(addr, &spec.host, spec.host_port)
                .await
                .map_err(|e| format!("bind [{}]:{}: {}", addr.ip(), addr.port(), crate::strerror(&e)))
        }
        .await;
        match r {
            Ok(f) => {
                tracing::info!(
                    "local forward {} -> {}:{} (through the server)",
                    f.local_addr(),
                    spec.host,
                    spec.host_port
                );
                fw.local.push(f);
            }
            Err(e) => {
                let msg = format!("{e}\nCould not request local forwarding.");
                if exit_on_failure {
                    return Err(msg);
                }
                eprintln!("{msg}");
            }
        }
    }
    for spec in remote {
        match client
            .remote_forward(spec.remote_bind(), u32::from(spec.port), &spec.host, spec.host_port)
            .await
        {
            Ok(f) => {
                if spec.port == 0 {
                    eprintln!(
                        "Allocated port {} for remote forward to {}:{}",
                        f.bound_port(),
                        spec.host,
                        spec.host_port
                    );
                }
                tracing::info!(
                    "remote forward {}:{} -> {}:{} (from here)",
                    spec.remote_bind(),
                    f.bound_port(),
                    spec.host,
                    spec.host_port
                );
                fw.remote.push(f);
            }
            Err(e) => {
                tracing::debug!("remote forward: {e}");
                let msg = format!("Warning: remote port forwarding failed for listen port {}", spec.port);
                if exit_on_failure {
                    return Err(format!(
                        "Error: remote port forwarding failed for listen port {}",
                        spec.port
                    ));
                }
                if !retry_refused {
                    eprintln!("{msg}");
                    continue;
                }
                eprintln!("{msg}; asking again");
                let (client, spec) = (client.clone(), spec.clone());
                fw.retrying.push(tokio::spawn(async move {
                    let refused = |_: &sansh::tokio::ClientError, wait: std::time::Duration| {
                        tracing::info!("remote forward {}: refused, asking again in {wait:?}", spec.port);
                    };
                    let bind = spec.remote_bind().to_owned();
                    let granted = client
                        .remote_forward_retrying(
                            &bind,
                            u32::from(spec.port),
                            &spec.host,
                            spec.host_port,
                            refused,
                        )
                        .await;
                    if let Some(f) = granted {
                        eprintln!(
                            "sansh: remote port forwarding for listen port {} is up (port {})",
                            spec.port,
                            f.bound_port()
                        );
                    }
                }));
            }
        }
    }
    Ok(fw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = ForwardSpec::parse("8080:example.com:80").unwrap();
        assert_eq!((s.bind, s.port, s.host.as_str(), s.host_port), (None, 8080, "example.com", 80));
        let s = ForwardSpec::parse("*:0:127.0.0.1:22").unwrap();
        assert_eq!((s.bind.as_deref(), s.port), (Some("*"), 0));
        let s = ForwardSpec::parse("[::1]:8080:[fe80::1]:80").unwrap();
        assert_eq!((s.bind.as_deref(), s.host.as_str()), (Some("::1"), "fe80::1"));
        let s = ForwardSpec::parse("8080/localhost/80").unwrap();
        assert_eq!(s.host, "localhost");
        for bad in ["8080", "x:h:80", "1:h:0", "1:2:3:4:5", "[::1:8080:h:80"] {
            assert!(ForwardSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
