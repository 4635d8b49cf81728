//! One attempt's session: connect, then keep up to [`WINDOW`] offers in
//! flight while the look-ahead thread ([`super::prepare`]) hashes the next
//! files and the reader thread ([`super::link`]) collects the receiver's
//! answers; END when every entry is settled.

use super::link::*;
use super::lookahead::*;
use super::prepare::*;
use super::types::*;
use super::verdict::Verdict;
use crate::conn::ConnError;
use crate::exit::Exit;
use crate::front::dial::dial;
use crate::net;
use crate::protocol::frame::end_flags;
use crate::protocol::Frame;
use crate::sanitize::escape;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Tracks how long the receiver has been silent *and* our socket has not
/// drained: only that counts against `--timeout`.
pub(super) struct Quiet {
    pub(super) since: Instant,
    pub(super) unsent: Option<u32>,
}

impl Quiet {
    pub(super) fn new() -> Self {
        Quiet {
            since: Instant::now(),
            unsent: None,
        }
    }

    /// Something arrived from the receiver.
    pub(super) fn reset(&mut self) {
        self.since = Instant::now();
    }

    /// Given the bytes still queued on our socket, true when nothing has
    /// moved for `timeout`.
    pub(super) fn stalled(&mut self, unsent: Option<u32>, timeout: Duration) -> bool {
        if unsent != self.unsent {
            self.unsent = unsent;
            self.since = Instant::now();
            return false;
        }
        self.since.elapsed() >= timeout
    }
}

impl Sender<'_> {
    /// One session: connect, greet, then keep up to [`WINDOW`] offers in
    /// flight: a look-ahead thread hashes the next files, a reader thread
    /// collects the receiver's answers, and this thread sends offers and,
    /// as ACCEPTs come back, bodies. END when every entry is settled.
    pub(super) fn attempt(&mut self) -> Result<(), Broken> {
        let (tx, rx) = mpsc::channel::<Mail>();
        let mut rx = Inbox::new(rx);
        // Connect first: an unreachable receiver is reported before any
        // hashing.
        let mut link = Some(self.connect_link(&tx, 0)?);
        // Bytes counted for entries that were not confirmed are counted
        // again when they are sent again.
        for i in self.items.iter_mut() {
            if i.state == State::Pending {
                self.total.dec(std::mem::take(&mut i.shown));
            }
        }
        let again: Vec<Job> = self
            .items
            .iter()
            .filter(|(_, i)| i.state == State::Pending)
            .map(|(idx, i)| Job {
                idx,
                entry: i.entry.clone(),
                known: i.md5,
                stream_ok: !i.need_digest,
            })
            .collect();
        let Some(feed) = self.items.feed.take() else {
            return Err(internal("the walk was lost"));
        };
        self.walked_all = false;
        let (mut permits, permit_rx) = Permits::new(ahead());
        let hasher = spawn_hasher(
            again,
            feed,
            (self.cfg.hash, self.cfg.attrs),
            self.cache.clone(),
            self.hashing.clone(),
            tx.clone(),
            permit_rx,
        )?;

        let result = self.window(&mut link, &tx, &mut rx, &mut permits, &hasher);
        let result = match (result, &link) {
            (Err(b), Some(l)) if b.retry && b.reset => Err(self.why_broken(b, l.gen, &mut rx)),
            (other, _) => other,
        };
        // Unblock the reader thread whatever happened.
        if let Some(l) = &link {
            let _ = l.conn.get_ref().shutdown(std::net::Shutdown::Both);
        }
        // The look-ahead thread stops at its next permit and gives the
        // walk back; what it took from it comes into play, to be offered
        // in the next attempt.
        drop(permits);
        let feed = hasher.join();
        while let Some(msg) = rx.try_recv() {
            if let Msg::Ready(ready) = msg {
                self.walked(ready);
            }
        }
        // Links accepted in a session that never reached its END were
        // never made.
        let mut unsure = std::mem::take(&mut self.unsure);
        self.items.links_lost(&mut unsure);
        self.items.retire(self.manifest);
        match feed {
            Ok(feed) => self.items.feed = Some(feed),
            Err(_) => return Err(internal("the hashing thread panicked")),
        }
        result
    }

    /// Connects and greets (or takes the next call, or the one
    /// connection given); the reader thread tags what it reads with `gen`.
    pub(super) fn connect_link(&self, tx: &mpsc::Sender<Mail>, gen: u64) -> Result<Link, Broken> {
        let target = &self.cfg.target;
        let conn = match &self.links {
            Links::Dial => dial(
                target,
                self.cfg.connect_timeout,
                self.cfg.timeout,
                self.cfg.token.as_ref(),
                self.cfg.cipher,
                &Frame::Push,
            )?,
            Links::Calls(gate) => {
                let wait = self.called.get().then_some(self.cfg.connect_timeout);
                let conn = take_call(*gate, wait, self.cfg.timeout, target)?;
                self.called.set(true);
                conn
            }
            Links::Given(given) => match given.take() {
                Some(conn) => conn,
                None => return Err(handed_over()),
            },
        };
        let reader = conn
            .get_ref()
            .try_clone()
            .with_context(|| format!("cannot set up the connection to {target}"))?;
        // From here on only the reader thread reads, and it must not time
        // out while a long body is being sent (the receiver says nothing
        // until it has it all): the session thread enforces `--timeout`
        // where it waits for the receiver, and writes keep their timeout.
        reader
            .tcp()
            .set_read_timeout(None)
            .with_context(|| format!("cannot set up the connection to {target}"))?;
        spawn_reader(reader, tx.clone(), gen)?;
        Ok(Link {
            conn,
            gen,
            offers: 0,
        })
    }

    /// The windowed exchange of one attempt. When nothing is in flight and
    /// the look-ahead thread is still hashing (a large file), the session
    /// is ended cleanly before the receiver's idle timeout would drop it,
    /// and a new one is opened once there is something to offer.
    pub(super) fn window(
        &mut self,
        link: &mut Option<Link>,
        tx: &mpsc::Sender<Mail>,
        rx: &mut Inbox,
        permits: &mut Permits,
        hasher: &std::thread::JoinHandle<Feed>,
    ) -> Result<(), Broken> {
        let mut ready: VecDeque<(usize, Prepared)> = VecDeque::new();
        let mut answers = Answers::default();
        let mut results = Flights::default();
        let mut next_gen = 1;
        let mut quiet = Quiet::new();
        loop {
            if !ready.is_empty() && link.is_none() {
                *link = Some(self.connect_link(tx, next_gen)?);
                next_gen += 1;
            }
            if let Some(l) = link.as_mut() {
                let mut sent = false;
                while answers.len() + results.len() < window()
                    && !answers.full()
                    && !self.session_full(l)
                {
                    let Some((idx, prep)) = ready.pop_front() else {
                        break;
                    };
                    permits.owe(prep.read_ahead());
                    if let Some(offer) = self.offer(&mut l.conn, idx, prep)? {
                        answers.push_back(offer);
                        l.offers += 1;
                        sent = true;
                    }
                }
                if sent {
                    l.conn.flush()?;
                }
            }
            permits.give(ready.is_empty());
            // A session full of entries ends once it is settled; the rest
            // go in the next one.
            let settled = answers.is_empty() && results.is_empty();
            if settled && link.as_ref().is_some_and(|l| self.session_full(l)) {
                if let Some(l) = link.take() {
                    self.end_session(l, rx)?;
                }
                continue;
            }
            if self.walked_all && ready.is_empty() && answers.is_empty() && results.is_empty() {
                break;
            }
            let idle = answers.is_empty() && results.is_empty();
            let wait = match (idle, link.is_some()) {
                // Waiting for the receiver: in slices, to watch our bytes
                // still draining towards it (see below).
                (false, _) => Duration::from_secs(1).min(self.cfg.timeout),
                // Waiting for the hasher with a session open: not so long
                // that the receiver's idle timeout ends it under us.
                (true, true) => (self.cfg.timeout / 2).max(Duration::from_secs(1)),
                // Waiting for the hasher alone: check now and then that it
                // is still there.
                (true, false) => Duration::from_secs(1),
            };
            let msg = match rx.recv_timeout(wait) {
                Ok(m) => {
                    quiet.reset();
                    m
                }
                Err(_) if idle && link.is_some() => {
                    if let Some(l) = link.take() {
                        self.end_session(l, rx)?;
                    }
                    continue;
                }
                Err(_) if idle && !hasher.is_finished() => continue,
                Err(_) if idle => return Err(internal("the hashing thread stopped")),
                Err(_) => {
                    // The receiver is silent until it has a whole body; that
                    // is fine as long as the bytes we sent are still being
                    // taken (a slow link). Only `--timeout` seconds without
                    // either is a stall.
                    let unsent = link
                        .as_ref()
                        .and_then(|l| net::unsent(l.conn.get_ref().tcp()));
                    if quiet.stalled(unsent, self.cfg.timeout) {
                        return Err(ConnError::Timeout.into());
                    }
                    continue;
                }
            };
            // Handle what is already there as well (bounded), then write
            // out what that queued: one write for many small bodies.
            let mut next = Some(msg);
            let mut handled = 0;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Ready(batch) => {
                        for (idx, entry, prep) in batch {
                            if let Some(e) = entry {
                                self.items.walked(idx, e);
                            }
                            ready.push_back((idx, prep));
                        }
                    }
                    Msg::Exhausted => self.walked_all = true,
                    Msg::Answer(gen, _) if link.as_ref().is_none_or(|l| l.gen != gen) => {}
                    Msg::Answer(_, Err(e)) => {
                        // The reader's last word: no ERROR can follow it.
                        let b = Broken::from(e);
                        return Err(Broken { reset: false, ..b });
                    }
                    Msg::Answer(_, Ok(frame)) => {
                        if let Some(l) = link.as_mut() {
                            self.on_answer(&mut l.conn, frame, &mut answers, &mut results)?;
                        }
                    }
                }
                handled += 1;
                if handled < DRAIN_MAX {
                    next = rx.try_recv();
                }
            }
            if let Some(l) = link.as_mut() {
                l.conn.flush()?;
            }
            // Settled entries are counted and dropped as the window moves.
            self.items.retire_due(self.manifest);
        }
        if self.serving {
            self.cache_asked_digests();
        }
        match link.take() {
            Some(l) => self.end_session(l, rx),
            None => Ok(()),
        }
    }

    /// Entries the look-ahead took from the walk come into play, their
    /// preparation dropped (to be done again when they are offered).
    fn walked(&mut self, ready: Vec<Ready>) {
        for (idx, entry, _) in ready {
            if let Some(e) = entry {
                self.items.walked(idx, e);
            }
        }
    }

    /// END, then wait for SUMMARY.
    pub(super) fn end_session(&mut self, mut l: Link, rx: &mut Inbox) -> Result<(), Broken> {
        self.sending.set_length(0);
        // Entries left (not offered yet, or to offer again): a receiver
        // that dialed calls again for them.
        let more = !self.walked_all || self.items.iter().any(|(_, i)| i.state == State::Pending);
        let flags = if more { end_flags::MORE } else { 0 };
        l.conn
            .send(&Frame::End { flags })
            .with_context(|| format!("cannot finish the session with {}", self.cfg.target))?;
        let ended = loop {
            match rx.recv_timeout(self.cfg.timeout) {
                // The look-ahead goes on: what it prepared (and that it
                // is done) is for the next session.
                Ok(m @ (Msg::Ready(_) | Msg::Exhausted)) => rx.keep(m),
                Ok(Msg::Answer(gen, _)) if gen != l.gen => {}
                Ok(Msg::Answer(_, Ok(Frame::Summary { .. }))) => {
                    let mut unsure = std::mem::take(&mut self.unsure);
                    self.items.links_made(&mut unsure);
                    break Ok(());
                }
                Ok(Msg::Answer(_, Ok(Frame::Error { code, message }))) => {
                    break Err(peer_error(code, &message).into())
                }
                // A link accepted earlier that could not be created at END.
                Ok(Msg::Answer(_, Ok(Frame::Result { id, message, .. }))) => {
                    if let Err(b) = self.link_failed(id, &message) {
                        break Err(b);
                    }
                }
                Ok(Msg::Answer(_, Ok(other))) => {
                    break Err(
                        anyhow::anyhow!("receiver answered END with {}", other.name()).into(),
                    )
                }
                Ok(Msg::Answer(_, Err(e))) => break Err(e.into()),
                Err(_) => break Err(ConnError::Timeout.into()),
            }
        };
        rx.restore();
        let _ = l.conn.get_ref().shutdown(std::net::Shutdown::Both);
        ended
    }

    /// True when session `l` takes no more offers: it carried its cap of
    /// entries. (Links it accepted are held until its END, as the
    /// receiver holds them: ending it early to drop them would split hard
    /// links from their files, which must arrive in one session.)
    fn session_full(&self, l: &Link) -> bool {
        l.offers >= self.cfg.session_entries
    }

    /// The receiver could not create the link it accepted as offer `id`
    /// (it says so after END; such a link is in play until SUMMARY). A
    /// RESULT then for anything else breaks the session.
    fn link_failed(&mut self, id: u32, message: &str) -> Result<(), Broken> {
        let idx = (id as usize).wrapping_sub(1);
        let shown = match self.items.get(idx) {
            Some(i) if i.unsure => i.entry.name.shown(),
            _ => {
                return Err(anyhow::anyhow!(
                    "receiver answered END with RESULT for entry {id}, not a link of this session"
                )
                .into())
            }
        };
        let msg = format!("{shown}: receiver could not create it: {}", escape(message));
        self.settle(idx, Verdict::Failed(Exit::Failure, "io", msg));
        Ok(())
    }

    /// A write to the receiver failed (reset, broken pipe): if the
    /// receiver said why before it closed (an ERROR the reader thread is
    /// about to pass on), that is the reason, not the reset. A tampered
    /// session must not be retried as a network fault. Entries the
    /// look-ahead took from the walk meanwhile come into play.
    fn why_broken(&mut self, b: Broken, gen: u64, rx: &mut Inbox) -> Broken {
        let until = Instant::now() + ERROR_GRACE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Msg::Answer(g, Ok(Frame::Error { code, message }))) if g == gen => {
                    return peer_error(code, &message).into()
                }
                // The reader saw the end without an ERROR.
                Ok(Msg::Answer(g, Err(_))) if g == gen => return b,
                Ok(Msg::Ready(ready)) => self.walked(ready),
                Ok(_) => {}
                Err(_) => return b,
            }
        }
    }
}

/// A failure of this program, not of the transfer: not retried.
fn internal(what: &str) -> Broken {
    Broken {
        err: anyhow::anyhow!("internal error: {what}"),
        retry: false,
        reset: false,
    }
}

/// How long a broken write waits for the receiver's ERROR to be read.
const ERROR_GRACE: Duration = Duration::from_secs(1);
