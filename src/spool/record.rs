//! The spool's record format and the reading of one segment file.
//!
//! A record is `len` (u32 LE, payload bytes), `crc` (u32 LE, CRC-32 of the
//! payload), then the payload, whose first byte says what it is:
//! - `MESSAGE`: seq (u64), tag (u64), metadata length (u32), the metadata
//!   (the publish buffer's: own routing key and property bytes), the body;
//! - `FORGET`: ranges of sequence numbers that ended (confirmed or failed),
//!   each a first seq (u64) and a count (u32).
//!
//! All integers little-endian. A record that does not check out (a length
//! beyond the file's end, a checksum that differs, an unknown kind) ends
//! what is read of its segment: the rest is a torn or damaged tail.

use std::io::Read;

pub(crate) const HEADER: usize = 8;
const MESSAGE: u8 = 1;
const FORGET: u8 = 2;
/// kind, seq, tag, metadata length.
const MESSAGE_FIXED: usize = 1 + 8 + 8 + 4;
const RANGE: usize = 12;

/// A message as the spool keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub seq: u64,
    pub tag: u64,
    pub meta: Vec<u8>,
    pub body: Vec<u8>,
}

/// Appends the message record to `out`.
pub(crate) fn encode_message(out: &mut Vec<u8>, seq: u64, tag: u64, meta: &[u8], body: &[u8]) {
    let start = out.len();
    let len = MESSAGE_FIXED + meta.len() + body.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(MESSAGE);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    seal(out, start);
}

/// Appends a forget record for `ranges` (first seq, count) to `out`.
pub(crate) fn encode_forget(out: &mut Vec<u8>, ranges: &[(u64, u32)]) {
    let start = out.len();
    let len = 1 + RANGE * ranges.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(FORGET);
    for (first, count) in ranges {
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
    seal(out, start);
}

fn seal(out: &mut [u8], start: usize) {
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Sorted sequence numbers as (first, count) ranges.
pub(crate) fn ranges(sorted: &[u64]) -> Vec<(u64, u32)> {
    let mut out: Vec<(u64, u32)> = Vec::new();
    for &s in sorted {
        match out.last_mut() {
            Some((first, n)) if *first + u64::from(*n) == s && *n < u32::MAX => *n += 1,
            Some((first, n)) if s < *first + u64::from(*n) => {} // a repeat
            _ => out.push((s, 1)),
        }
    }
    out
}

/// What one record of a segment said.
pub(crate) enum Entry {
    Message(Record),
    Forget(Vec<(u64, u32)>),
}

/// How reading a segment ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Bytes of good records.
    pub good: u64,
    /// Bytes after them that did not check out (0: a clean end).
    pub dropped: u64,
    /// Why they were dropped.
    pub why: Option<&'static str>,
}

/// Reads the records of a segment of `len` bytes from `r`, handing each to
/// `each`, until the end or the first one that does not check out. Reads
/// at most one record into memory at a time; a length is believed only
/// if that many bytes are left in the file.
pub(crate) fn read_segment(
    r: &mut impl Read,
    len: u64,
    mut each: impl FnMut(Entry),
) -> std::io::Result<Tail> {
    let mut at = 0u64;
    let bad = |at: u64, why| Tail {
        good: at,
        dropped: len - at,
        why: Some(why),
    };
    while at < len {
        if len - at < HEADER as u64 {
            return Ok(bad(at, "a truncated record header"));
        }
        let mut head = [0u8; HEADER];
        r.read_exact(&mut head)?;
        let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if n > len - at - HEADER as u64 {
            return Ok(bad(
                at,
                "a record longer than the rest of the file (torn write)",
            ));
        }
        let mut payload = vec![0u8; n as usize];
        r.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            return Ok(bad(at, "a checksum mismatch"));
        }
        match decode(payload) {
            Some(e) => each(e),
            None => return Ok(bad(at, "a malformed record")),
        }
        at += HEADER as u64 + n;
    }
    Ok(Tail {
        good: at,
        dropped: 0,
        why: None,
    })
}

fn decode(mut p: Vec<u8>) -> Option<Entry> {
    let u64_at = |p: &[u8], i: usize| {
        p.get(i..i + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let u32_at = |p: &[u8], i: usize| {
        p.get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    match *p.first()? {
        MESSAGE => {
            let seq = u64_at(&p, 1)?;
            let tag = u64_at(&p, 9)?;
            let meta_len = u32_at(&p, 17)? as usize;
            if p.len() < MESSAGE_FIXED + meta_len || seq == 0 {
                return None;
            }
            let body = p.split_off(MESSAGE_FIXED + meta_len);
            p.drain(..MESSAGE_FIXED);
            Some(Entry::Message(Record {
                seq,
                tag,
                meta: p,
                body,
            }))
        }
        FORGET => {
            if !(p.len() - 1).is_multiple_of(RANGE) {
                return None;
            }
            let ranges = p[1..]
                .chunks_exact(RANGE)
                .map(|c| Some((u64_at(c, 0)?, u32_at(c, 8)?)))
                .collect::<Option<Vec<_>>>()?;
            Some(Entry::Forget(ranges))
        }
        _ => None,
    }
}
