//! Adding a message_id to encoded properties (queue option
//! `auto_message_id`), without decoding or re-encoding the rest.

use super::{Reader, Shape, DELIVERY_MODE, LAYOUT, MESSAGE_ID};

/// Appends to `out` the property bytes `props` with `id` as their
/// message_id; `props` empty: only the id and delivery mode `mode` (0:
/// none), the properties a plain publish of the queue has. False (nothing
/// written) when `props` has a message_id already, continuation flags
/// (never written by our encoder) or do not parse, or `id` is over 255
/// bytes.
pub fn with_message_id(props: &[u8], mode: u8, id: &[u8], out: &mut Vec<u8>) -> bool {
    if id.len() > 255 {
        return false;
    }
    let short = |out: &mut Vec<u8>| {
        out.push(id.len() as u8);
        out.extend_from_slice(id);
    };
    if props.is_empty() {
        let flags = MESSAGE_ID | if mode != 0 { DELIVERY_MODE } else { 0 };
        out.extend_from_slice(&flags.to_be_bytes());
        if mode != 0 {
            out.push(mode);
        }
        short(out);
        return true;
    }
    let mut r = Reader { b: props, at: 0 };
    let Ok(word) = r.arr::<2>() else {
        return false;
    };
    let flags = u16::from_be_bytes(word);
    if flags & (MESSAGE_ID | 1) != 0 {
        return false;
    }
    for (flag, shape) in LAYOUT {
        if flag == MESSAGE_ID {
            break;
        }
        if flags & flag == 0 {
            continue;
        }
        let skipped = match shape {
            Shape::Short => r.short(),
            Shape::Table => r.long(),
            Shape::Fixed(n) => r.take(n),
        };
        if skipped.is_err() {
            return false;
        }
    }
    out.extend_from_slice(&(flags | MESSAGE_ID).to_be_bytes());
    out.extend_from_slice(&props[2..r.at]);
    short(out);
    out.extend_from_slice(&props[r.at..]);
    true
}

#[cfg(test)]
mod tests {
    use super::super::tests::encode_all_but_message_id;
    use super::super::*;
    use super::*;

    #[test]
    fn an_id_added_reads_back_with_everything_else() {
        let mut out = Vec::new();
        assert!(with_message_id(&[], 2, b"auto-1", &mut out));
        let p = decode(&out).unwrap();
        assert_eq!(
            (p.str(MESSAGE_ID), p.delivery_mode),
            (Some(&b"auto-1"[..]), 2)
        );
        out.clear();
        assert!(with_message_id(&[], 0, b"auto-2", &mut out));
        assert_eq!(decode(&out).unwrap().flags, MESSAGE_ID);

        let full = encode_all_but_message_id();
        let before = decode(&full).unwrap();
        let mut out = Vec::new();
        assert!(with_message_id(&full, 2, b"auto-3", &mut out));
        assert_eq!(checked(&out), &out[..]);
        let mut after = decode(&out).unwrap();
        assert_eq!(after.str(MESSAGE_ID), Some(&b"auto-3"[..]));
        assert_eq!(message_id(&out), Some(&b"auto-3"[..]));
        after.flags &= !MESSAGE_ID;
        after.strs[5] = &[];
        assert_eq!(after, before, "the rest unchanged");
        let mut again = Vec::new();
        assert!(
            !with_message_id(&out, 2, b"x", &mut again),
            "one set already"
        );
        assert!(again.is_empty());
    }
}
