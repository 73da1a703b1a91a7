//! The record's side of a relayed WebSocket: each direction's frames
//! ([`Frames`]) become messages in the connection's [`MessageLog`].
//!
//! Invariants: the tap never waits and never buffers a whole message
//! beyond the capture limit (see [`Frames`]).

use std::sync::Arc;

use super::frames::{Deflate, Frames, Message};
use crate::record::message_log::{Captured, End, MessageLog};
use crate::record::messages::{Direction, COMPRESSED, DROPPED, TRUNCATED};
use crate::registry::CloseReason;
use crate::relay::{Removed, Tap};

/// The WebSocket ended: its bytes each way after the switch, why it
/// closed, and why its frames could not be read, if so.
pub fn finish(log: &MessageLog, reason: &CloseReason, up: u64, down: u64, note: Option<String>) {
    let error = match reason {
        CloseReason::Eof => None,
        r => r
            .side()
            .map(|side| format!("{r} (failed: {})", side.as_str())),
    };
    log.finish(End {
        req_size: Some(up),
        resp_size: Some(down),
        close_reason: Some(reason.to_string()),
        error,
        note,
    });
}

fn captured(m: Message) -> Captured {
    let mut flags = 0;
    if m.truncated {
        flags |= TRUNCATED;
    }
    if m.compressed {
        flags |= COMPRESSED;
    }
    Captured {
        opcode: m.opcode,
        at: m.at,
        size: m.size,
        flags,
        meta: m
            .problem
            .map(|p| serde_json::json!({ "problem": p }).to_string()),
        payload: m.payload,
    }
}

/// One direction's frame reader, recording into the log when there is one.
pub struct DirectionTap {
    frames: Frames,
    dir: Direction,
    log: Option<Arc<MessageLog>>,
}

impl DirectionTap {
    pub fn new(
        dir: Direction,
        log: Option<Arc<MessageLog>>,
        deflate: Option<Deflate>,
    ) -> DirectionTap {
        let limit = log.as_ref().map(|l| l.limit());
        DirectionTap {
            frames: Frames::new(limit, deflate),
            dir,
            log,
        }
    }

    /// Why this direction's frames could not be read, if so.
    pub fn unreadable(&self) -> Option<String> {
        self.frames
            .broken()
            .map(|w| format!("{}: {w}", self.dir.as_str()))
    }
}

impl Tap for DirectionTap {
    fn passed(&mut self, bytes: &[u8]) -> bool {
        let (dir, log) = (self.dir, &self.log);
        if let Some(l) = log {
            self.frames.set_capture(l.wants_payload());
        }
        self.frames.feed(bytes, &mut |m| {
            if let Some(l) = log {
                l.message(dir, captured(m));
            }
        });
        self.frames.closed()
    }

    /// A message a rule dropped: recorded as it came, flagged, at most the
    /// log's limit of its payload.
    fn removed(&mut self, unit: Removed) {
        let Some(l) = &self.log else { return };
        let Removed {
            opcode,
            size,
            mut payload,
            ..
        } = unit;
        let mut flags = DROPPED;
        if !l.wants_payload() {
            payload = Vec::new();
        } else if payload.len() > l.limit() {
            payload.truncate(l.limit());
            payload.shrink_to_fit();
            flags |= TRUNCATED;
        }
        l.message(
            self.dir,
            Captured {
                opcode,
                at: std::time::SystemTime::now(),
                size,
                flags,
                meta: None,
                payload,
            },
        );
    }
}
