//! Claims across sessions: a target being received by one session is not
//! offered to another at the same time, except that a session from the
//! same host may take over a file its own dead connection still holds.

use super::types::*;
use crate::net::{self};
use std::time::{Duration, Instant};

/// How long a session waits for another session it took a file over from
/// to checkpoint and let go.
pub(super) const TAKEOVER_WAIT: Duration = Duration::from_secs(10);
/// How long a session must have received nothing before another session
/// from the same host may take its file over.
pub(super) const TAKEOVER_IDLE: Duration = Duration::from_secs(2);
impl<'a> Session<'a, '_> {
    /// Marks `key` as being received by this session. When another session
    /// from the same host holds it, that is most likely the sender's own
    /// earlier connection: closed by its peer (a sender killed and run
    /// again at once: its old session is still taking in what arrived and
    /// checkpointing), or broken without the receiver noticing (a
    /// half-open TCP connection, silent for [`TAKEOVER_IDLE`]: it is
    /// ended). This session waits (bounded) for it to checkpoint and let
    /// go, then takes over, so the retry resumes at once instead of being
    /// refused until the old one is gone.
    pub(super) fn claim_inflight(&self, key: &std::sync::Arc<[u8]>) -> bool {
        // Only a name someone else holds waits (no clock read per file).
        let mut deadline = None;
        let mut aborted = false;
        loop {
            let holder = match self.sh.inflight.lock() {
                Ok(mut m) => match m.entry(key.clone()) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(self.peer);
                        return true;
                    }
                    std::collections::hash_map::Entry::Occupied(o) => *o.get(),
                },
                Err(_) => return false,
            };
            if !aborted {
                // Only a session from the same host that has received
                // nothing for a while is presumed dead; a live one keeps
                // the file and this offer is refused as "in progress".
                let stale = if holder.ip() != self.peer.ip() {
                    None
                } else {
                    self.sh.slots.live.lock().ok().and_then(|live| {
                        let l = live.get(&holder)?;
                        if net::peer_closed(&l.stream) {
                            // Left to read what is buffered, and let go.
                            return Some("whose connection has closed".to_owned());
                        }
                        (l.activity.idle() >= TAKEOVER_IDLE).then(|| {
                            net::abort(&l.stream);
                            format!(
                                "silent for {} s or more; ended that connection",
                                TAKEOVER_IDLE.as_secs()
                            )
                        })
                    })
                };
                let Some(why) = stale else {
                    return false;
                };
                aborted = true;
                self.sh.log(&format!(
                    "{}: '{}' was held by {holder} from the same host, {why}; taking over once it lets go",
                    self.peer,
                    crate::sanitize::escape_bytes(key),
                ));
            }
            let now = Instant::now();
            if now >= *deadline.get_or_insert(now + TAKEOVER_WAIT) {
                return false;
            }
            // Bounded wait for the old session to checkpoint and let go.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
