//! `--reconnect[=MAX]`: keep the connection up as autossh does. When it is
//! lost (or a dial fails), `sansh::Reconnect` says when to dial again; each
//! new connection re-establishes `-L`/`-R` and starts the work again (the
//! command, the shell, or just the forwards with `-N`).

use std::time::Instant;

use sansh::tokio::{Client, ClientError, ClientOptions};
use sansh::{CloseReason, Reconnect, ReconnectAction, ReconnectConfig, Timestamp};

use crate::args::Args;
use crate::{Target, Work, failure_message, forward, hang_up, session, work};

/// What the machine decided after a failure.
enum Next {
    Dial,
    GiveUp,
}

/// Runs the work, reconnecting on loss, until it ends by itself (its exit
/// code) or the machine gives up (255).
pub async fn run(a: &Args, target: &Target, options: ClientOptions, max_retries: Option<u32>) -> i32 {
    let origin = Instant::now();
    let now = || Timestamp::from_micros(origin.elapsed().as_micros() as u64);
    let mut seed = [0u8; 32];
    if getrandom::getrandom(&mut seed).is_err() {
        seed[..16].copy_from_slice(&origin.elapsed().as_nanos().to_le_bytes());
    }
    let config = ReconnectConfig { max_retries, ..ReconnectConfig::default() };
    let mut machine = Reconnect::new(config, seed);
    let exit_on_failure = a.options.exit_on_forward_failure.unwrap_or(false);
    let mut connected_before = false;
    loop {
        match Client::connect(&target.host, target.port, options.clone()).await {
            Ok(client) => {
                machine.connected(now());
                if connected_before {
                    eprintln!("sansh: reconnected to {} port {}", target.host, target.port);
                }
                connected_before = true;
                match forward::setup(&client, a, exit_on_failure, true).await {
                    Ok(forwards) => {
                        let outcome = work(&client, a, target).await;
                        drop(forwards);
                        match outcome {
                            Work::Exit(code) => {
                                machine.stop();
                                hang_up(&client).await;
                                return code;
                            }
                            Work::Lost(e) => {
                                eprintln!("{}", failure_message(&e, target, true));
                                let reason = match e {
                                    ClientError::Closed(reason) => reason,
                                    // A lost link under a channel operation.
                                    e if e.is_retryable() => CloseReason::Eof,
                                    e => {
                                        eprintln!("sansh: not reconnecting: {e}");
                                        hang_up(&client).await;
                                        return 255;
                                    }
                                };
                                machine.lost(now(), &reason);
                            }
                        }
                    }
                    Err(msg) => {
                        // ExitOnForwardFailure: a retry may find the port free.
                        eprintln!("{msg}");
                        hang_up(&client).await;
                        machine.lost(now(), &CloseReason::Eof);
                    }
                }
                // Let the old forwards' listeners close before re-binding.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => {
                eprintln!("{}", failure_message(&e, target, false));
                machine.dial_failed(now(), e.is_retryable(), &e.to_string());
            }
        }
        match next(&mut machine, &now).await {
            Next::Dial => continue,
            Next::GiveUp => return 255,
        }
    }
}

/// Drives the machine (reporting its schedule) until it says dial or give up.
async fn next(machine: &mut Reconnect, now: &impl Fn() -> Timestamp) -> Next {
    loop {
        while let Some(action) = machine.poll_action() {
            match action {
                ReconnectAction::Dial { attempt } => {
                    tracing::info!("reconnect attempt {attempt}");
                    return Next::Dial;
                }
                ReconnectAction::Scheduled { attempt, delay } => {
                    eprintln!("sansh: reconnecting in {:.1} s (attempt {attempt})", delay.as_secs_f64());
                }
                ReconnectAction::GiveUp { reason, attempts } => {
                    eprintln!("sansh: giving up after {attempts} attempts: {reason}");
                    return Next::GiveUp;
                }
            }
        }
        let Some(deadline) = machine.poll_timeout() else {
            // Nothing scheduled and nothing to do: cannot happen; do not spin.
            eprintln!("sansh: reconnect: nothing scheduled");
            return Next::GiveUp;
        };
        let wait = deadline.saturating_duration_since(now());
        tokio::select! {
            () = tokio::time::sleep(wait) => machine.handle_timeout(now()),
            n = session::any_terminating_signal() => {
                tracing::info!("Killed by signal {n}.");
                machine.stop();
                return Next::GiveUp;
            }
        }
    }
}
