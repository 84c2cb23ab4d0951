//! The connection protocol (RFC 4254): global requests and channels.

use std::collections::VecDeque;

use crate::auth::client::Ctx;
use crate::error::Error;
use crate::event::Event;
use crate::wire::{Reader, Writer, msg};

/// Who is waiting for the reply to a global request we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyTo {
    /// The application, through `Event::GlobalReply`.
    App(u64),
}

/// A global request from the peer, in arrival order: replies must go out in
/// that order (RFC 4254 §4), whoever answers them.
#[derive(Debug)]
struct Incoming {
    /// `Some(success)` once answered.
    reply: Option<bool>,
}

/// State of the connection protocol for one connection.
#[derive(Debug, Default)]
pub(crate) struct ConnectionProtocol {
    /// Our want-reply global requests, oldest first.
    pending_replies: VecDeque<ReplyTo>,
    /// Peer's want-reply global requests, oldest first.
    incoming: VecDeque<Incoming>,
}

fn malformed(message: &'static str) -> impl Fn(crate::wire::DecodeError) -> Error {
    move |reason| Error::Malformed { message, reason }
}

impl ConnectionProtocol {
    /// Handles a connection-protocol message.
    pub(crate) fn handle(&mut self, payload: &[u8], ctx: &mut Ctx<'_>) -> Result<(), Error> {
        let n = payload[0];
        let mut r = Reader::new(&payload[1..]);
        match n {
            msg::GLOBAL_REQUEST => {
                let m = malformed("GLOBAL_REQUEST");
                let _name = r.string("request name").map_err(&m)?;
                let want_reply = r.bool("want reply").map_err(&m)?;
                if want_reply {
                    // Requests we do not understand get REQUEST_FAILURE, as
                    // OpenSSH does; keepalive probes rely on that answer.
                    self.incoming.push_back(Incoming { reply: Some(false) });
                    self.flush_replies(ctx);
                }
                Ok(())
            }
            msg::REQUEST_SUCCESS | msg::REQUEST_FAILURE => {
                let Some(to) = self.pending_replies.pop_front() else {
                    return Err(Error::UnexpectedMessage {
                        number: n,
                        message: msg::name(n),
                        phase: "with no global request pending",
                    });
                };
                let ReplyTo::App(id) = to;
                ctx.shared.events.push_back(Event::GlobalReply {
                    id,
                    success: n == msg::REQUEST_SUCCESS,
                    data: r.remaining().to_vec(),
                });
                Ok(())
            }
            msg::CHANNEL_OPEN => {
                let m = malformed("CHANNEL_OPEN");
                let _kind = r.string("channel type").map_err(&m)?;
                let sender = r.u32("sender channel").map_err(&m)?;
                let mut p = Vec::with_capacity(64);
                p.put_u8(msg::CHANNEL_OPEN_FAILURE);
                p.put_u32(sender);
                p.put_u32(OPEN_ADMINISTRATIVELY_PROHIBITED);
                p.put_str("channels are not accepted by this endpoint");
                p.put_str("");
                ctx.out.send(&p, &mut ctx.shared.rng);
                Ok(())
            }
            _ => Err(Error::UnexpectedMessage {
                number: n,
                message: msg::name(n),
                phase: "for a channel that does not exist",
            }),
        }
    }

    /// Sends the replies at the front of the queue that are decided.
    fn flush_replies(&mut self, ctx: &mut Ctx<'_>) {
        while let Some(Incoming { reply: Some(ok), .. }) = self.incoming.front() {
            let byte = if *ok { msg::REQUEST_SUCCESS } else { msg::REQUEST_FAILURE };
            ctx.out.send(&[byte], &mut ctx.shared.rng);
            self.incoming.pop_front();
        }
    }

    /// Sends a global request. With `want_reply`, the answer comes back as
    /// `Event::GlobalReply` with `id` (or to the core for `ReplyTo::Internal`).
    pub(crate) fn global_request(
        &mut self,
        name: &str,
        want_reply: bool,
        data: &[u8],
        to: ReplyTo,
        ctx: &mut Ctx<'_>,
    ) {
        let mut p = Vec::with_capacity(name.len() + data.len() + 16);
        p.put_u8(msg::GLOBAL_REQUEST);
        p.put_str(name);
        p.put_bool(want_reply);
        p.extend_from_slice(data);
        ctx.out.send(&p, &mut ctx.shared.rng);
        if want_reply {
            self.pending_replies.push_back(to);
        }
    }
}

/// RFC 4254 §5.1 reason code.
pub(crate) const OPEN_ADMINISTRATIVELY_PROHIBITED: u32 = 1;
