//! Edge redeliveries of messages already spooled (issue 14, exactly once into JetStream).
//!
//! The spool names each record for the cloud (`Nats-Msg-Id` = site, spool, sequence number), so what
//! the spool sends again after a crash is dropped by the stream. What the spool cannot recognise on its
//! own is the MQTT edge broker sending a message again: the bridge spooled it, the crash (or a lost
//! connection) cut off its PUBACK, and the persistent session redelivers it after the reconnect — same
//! packet id, DUP flag set (MQTT 3.1.1 §4.4, MQTT 5 §4.4) — which would become a new record and a
//! duplicate in the stream.
//!
//! So every record keeps the packet id it arrived under ([`super::spool::Record::edge_id`]), and the
//! bridge remembers the newest [`WINDOW`] edge records (packet id, [`super::spool::edge_hash`] of topic
//! and payload, sequence number) — after a restart read back from the spool
//! ([`super::spool::recent_edge_records`]). A PUBLISH with DUP set whose packet id and hash match one of
//! them is that record: it is acknowledged once the record is durable, and not spooled again.
//!
//! What this relies on (the README says it too): the edge broker resends unacknowledged messages with
//! DUP set and their packet id, in their original order; it hands out packet ids in turn (Mosquitto,
//! EMQX), so an id comes back only after 65,535 others; and fewer than [`WINDOW`] spooled messages are
//! waiting for their PUBACK at a crash. Two more guards keep a false match (which would lose a message)
//! out: the hash must match too, and within one run of redeliveries the matched records must come in
//! spool order (a redelivery matching an older record than the previous match is spooled again: a
//! possible duplicate, never a loss). A first delivery (DUP clear) ends the run.

use std::collections::VecDeque;

use super::spool::EdgeRecord;

/// Edge records remembered: three quarters of the packet-id space, so that the previous message under
/// a packet id (65,535 deliveries back with ids handed out in turn) has left the window before a
/// message not yet spooled could be redelivered under it.
pub const WINDOW: usize = 49_152;

/// The newest edge records by packet id.
pub struct Window {
    cap: usize,
    /// (packet id, sequence number), oldest first.
    order: VecDeque<(u16, u64)>,
    /// The newest record under each packet id, indexed by the id: (hash, sequence number); sequence
    /// number 0 (the spool's first is 1): none. A table, not a map: `remember` runs for every edge
    /// message, and hashing the key was the bridge's costliest function of its own (docs/bridge-profile.md).
    /// Zeroed pages are not resident until an id is used.
    latest: Vec<(u32, u64)>,
    /// The record the previous redelivery of this run matched (0: none).
    last_match: u64,
}

impl Window {
    /// A window of `cap` records, holding `seed` (oldest first).
    pub fn new(cap: usize, seed: Vec<EdgeRecord>) -> Window {
        let mut w = Window {
            cap,
            order: VecDeque::with_capacity(cap.min(seed.len()) + 1),
            latest: vec![(0, 0); 1 << 16],
            last_match: 0,
        };
        for r in seed {
            w.remember(r.edge_id, r.hash, r.seq);
        }
        w
    }

    /// Record `seq` was spooled for the edge message with packet id `edge_id` and hash `hash`.
    pub fn remember(&mut self, edge_id: u16, hash: u32, seq: u64) {
        self.order.push_back((edge_id, seq));
        self.latest[usize::from(edge_id)] = (hash, seq);
        while self.order.len() > self.cap {
            let Some((id, old)) = self.order.pop_front() else {
                break;
            };
            let slot = &mut self.latest[usize::from(id)];
            if slot.1 == old {
                *slot = (0, 0);
            }
        }
    }

    /// A message delivered for the first time (DUP clear): the run of redeliveries is over.
    pub fn first_delivery(&mut self) {
        self.last_match = 0;
    }

    /// A redelivery (DUP set) of packet id `edge_id` with hash `hash`: the sequence number of the record
    /// that already holds it, if one does.
    pub fn redelivered(&mut self, edge_id: u16, hash: u32) -> Option<u64> {
        let (h, seq) = self.latest[usize::from(edge_id)];
        if seq == 0 || h != hash || seq <= self.last_match {
            return None;
        }
        self.last_match = seq;
        Some(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, edge_id: u16, hash: u32) -> EdgeRecord {
        EdgeRecord { seq, edge_id, hash }
    }

    #[test]
    fn a_redelivery_of_a_spooled_message_is_recognised_once_per_run_in_order() {
        let mut w = Window::new(100, vec![rec(1, 10, 0xa), rec(2, 11, 0xb), rec(3, 12, 0xc)]);
        assert_eq!(w.redelivered(11, 0xb), Some(2));
        assert_eq!(w.redelivered(12, 0xc), Some(3));
        // Same packet id, other content: another message.
        w.remember(13, 0xd, 4);
        assert_eq!(w.redelivered(13, 0xe), None);
        // Older than the last match within one run: spooled again rather than risk a loss.
        assert_eq!(w.redelivered(10, 0xa), None);
        w.first_delivery();
        assert_eq!(w.redelivered(10, 0xa), Some(1));
        // An unknown packet id, also with the hash an unused slot holds.
        assert_eq!(w.redelivered(99, 0xa), None);
        assert_eq!(w.redelivered(98, 0), None);
    }

    #[test]
    fn the_window_forgets_the_oldest_and_a_reused_packet_id_names_the_newest_message() {
        let mut w = Window::new(3, Vec::new());
        w.remember(1, 0xa, 1);
        w.remember(2, 0xb, 2);
        w.remember(1, 0xc, 3);
        w.remember(3, 0xd, 4);
        // Record 1 left the window, but packet id 1 is still record 3's.
        assert_eq!(w.redelivered(1, 0xa), None);
        assert_eq!(w.redelivered(1, 0xc), Some(3));
        w.first_delivery();
        w.remember(4, 0xe, 5);
        w.remember(5, 0xf, 6);
        // Record 3 left too: packet id 1 is forgotten.
        assert_eq!(w.redelivered(1, 0xc), None);
        assert_eq!(w.redelivered(2, 0xb), None);
        assert_eq!(w.redelivered(5, 0xf), Some(6));
    }
}
