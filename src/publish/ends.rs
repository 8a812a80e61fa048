//! Messages that ended (confirmed or failed) in one step of the outbox:
//! their counts, their reports when the queue has a report function, and
//! the buffer room they free.

use super::buffer::PublishBuffer;
use super::message::{Failure, Message, Outcome, Report};
use super::report::Batch;
use super::Reporting;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub confirmed: u64,
    pub failed: u64,
    pub expired: u64,
    pub refused: u64,
    pub unroutable: u64,
}

pub(super) struct Ends {
    reporting: Option<Reporting>,
    reports: Vec<Report>,
    tally: Tally,
    count: u64,
    bytes: u64,
    /// Spooled messages that ended for good (not `Unsent`, which the next
    /// process sends) and their bytes: the spool forgets them.
    pub spooled: Vec<u64>,
    pub spooled_bytes: u64,
}

impl Ends {
    pub fn new(reporting: Option<Reporting>) -> Ends {
        Ends {
            reporting,
            reports: Vec::new(),
            tally: Tally::default(),
            count: 0,
            bytes: 0,
            spooled: Vec::new(),
            spooled_bytes: 0,
        }
    }

    fn ended(&mut self, m: &Message, outcome: Outcome) {
        let len = m.body.stored_len() as u64;
        self.count += 1;
        self.bytes += len;
        let seq = m.body.seq();
        if seq != 0 && outcome != Outcome::Unsent {
            self.spooled.push(seq);
            self.spooled_bytes += len;
        }
    }

    pub fn confirmed(&mut self, m: Message) {
        self.ended(&m, Outcome::Confirmed);
        self.tally.confirmed += 1;
        if self.reporting.is_some() {
            self.reports.push(Report {
                tag: m.tag(),
                outcome: Outcome::Confirmed,
                attempts: m.sends,
                code: 0,
                reason: None,
            });
        }
    }

    pub fn failed(&mut self, m: Message, f: &Failure) {
        self.ended(&m, f.outcome);
        self.tally.failed += 1;
        match f.outcome {
            Outcome::Expired => self.tally.expired += 1,
            Outcome::Refused | Outcome::TooLarge => self.tally.refused += 1,
            Outcome::Unroutable => self.tally.unroutable += 1,
            _ => {}
        }
        if self.reporting.is_some() {
            self.reports.push(f.report(&m));
        }
    }

    /// Messages that ended here.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Reports go to the report thread, which frees their room after the
    /// report function saw them; without one the room is freed now.
    pub fn hand_on(self, buffer: &Arc<PublishBuffer>) {
        if self.count == 0 {
            return;
        }
        match self.reporting {
            Some(Reporting::Thread { callback, thread }) => thread.push(Batch {
                reports: self.reports,
                callback,
                buffer: buffer.clone(),
                bytes: self.bytes,
            }),
            Some(Reporting::Pull(pull)) => pull.push(self.reports, self.count, self.bytes, buffer),
            None => buffer.release_many(self.count, self.bytes),
        }
    }
}
