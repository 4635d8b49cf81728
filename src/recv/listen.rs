//! The signal handler that ends every session. Live sessions, busy
//! refusals and eviction are the listening front's ([`crate::front`]).

use super::types::*;
use anyhow::Result;
use std::sync::Arc;

/// On SIGINT or SIGTERM: stop accepting, end every session (each one
/// checkpoints the file it was receiving), wait for them, exit 130.
pub(super) fn watch_signals(shared: Arc<Shared>) -> Result<()> {
    crate::exit::on_interrupt(move || {
        shared.log("interrupted: checkpointing partial files, then exiting");
        shared.stopping.trigger();
        shared.slots.end_all();
    })
}
