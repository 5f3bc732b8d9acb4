//! The kernel's answers on the nftables netlink socket: the messages of a
//! reply, the acknowledgements in them, and what they say about a batch
//! (committed, refused and why, or unknown). Also the generation check
//! added to a batch's BATCH_BEGIN. Pure byte handling, no I/O.

use std::collections::BTreeMap;
use std::io;

use nftnl::nftnl_sys::libc;

use super::batch::Built;
use super::NftError;

/// `enum nlmsgerr_attrs` (include/uapi/linux/netlink.h); the libc crate
/// does not carry it.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// NLMSG_HDRLEN, which libc keeps private: `NLMSG_LENGTH(0)` is it.
const NLMSG_HDRLEN: usize = libc::NLMSG_LENGTH(0) as usize;

pub(super) fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// One parsed message: header fields and the whole message.
pub(super) struct Reply<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub bytes: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn replies(data: &[u8]) -> Vec<Reply<'_>> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32_at(rest, 0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        out.push(Reply {
            ty: u16_at(rest, 4),
            flags: u16_at(rest, 6),
            seq: u32_at(rest, 8),
            bytes: &rest[..len],
        });
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

/// An NLMSG_ERROR: the error (0 for an ack), the sequence number of the
/// message it answers, and the kernel's extended-ack text, if any.
pub(super) struct Ack {
    pub error: i32,
    pub seq: u32,
    pub message: Option<String>,
}

pub(super) fn parse_ack(r: &Reply) -> Option<Ack> {
    let b = r.bytes;
    if r.ty != libc::NLMSG_ERROR as u16 || b.len() < NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
        return None;
    }
    let error = u32_at(b, NLMSG_HDRLEN) as i32;
    let orig = NLMSG_HDRLEN + 4;
    let seq = u32_at(b, orig + 8);
    let mut message = None;
    if r.flags & libc::NLM_F_ACK_TLVS as u16 != 0 {
        // The TLVs follow the echoed request: its header only when capped.
        let echoed = if r.flags & libc::NLM_F_CAPPED as u16 != 0 {
            NLMSG_HDRLEN
        } else {
            (u32_at(b, orig) as usize).next_multiple_of(4)
        };
        let mut at = orig + echoed;
        while at + 4 <= b.len() {
            let (len, ty) = (u16_at(b, at) as usize, u16_at(b, at + 2) & 0x3fff);
            if len < 4 || at + len > b.len() {
                break;
            }
            if ty == NLMSGERR_ATTR_MSG {
                let text = &b[at + 4..at + len];
                let text = text.split(|c| *c == 0).next().unwrap_or_default();
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
            at += len.next_multiple_of(4);
        }
    }
    Some(Ack {
        error: -error,
        seq,
        message,
    })
}

/// Length of the BATCH_BEGIN message libnftnl writes: a netlink header and
/// an nfgenmsg, no attributes.
pub(super) const BEGIN_LEN: usize = 20;
/// A copy of the batch's BATCH_BEGIN with NFNL_BATCH_GENID added: the kernel
/// then aborts the batch with ERESTART if another writer committed since
/// `generation` was read (nfnetlink_rcv_batch).
pub(super) fn begin_with_generation(page: &[u8], generation: u32) -> Result<Vec<u8>, NftError> {
    let protocol = |detail: &str| NftError::Protocol {
        op: "batch begin",
        detail: detail.into(),
    };
    let head = page
        .get(..BEGIN_LEN)
        .ok_or_else(|| protocol("batch too short"))?;
    let len = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let ty = u16::from_ne_bytes([head[4], head[5]]);
    if len != BEGIN_LEN || i32::from(ty) != libc::NFNL_MSG_BATCH_BEGIN {
        return Err(protocol("the batch does not open with a plain BATCH_BEGIN"));
    }
    let mut msg = head.to_vec();
    msg.extend_from_slice(&8u16.to_ne_bytes());
    // NFNL_BATCH_GENID, the one attribute of BATCH_BEGIN.
    msg.extend_from_slice(&(libc::NFNL_BATCH_GENID as u16).to_ne_bytes());
    msg.extend_from_slice(&generation.to_be_bytes());
    let len = msg.len() as u32;
    msg[..4].copy_from_slice(&len.to_ne_bytes());
    Ok(msg)
}

/// The outcome of a batch from its acknowledgements. Any error means the
/// kernel aborted the whole transaction (nfnetlink never commits a batch
/// in which a message failed), so the first error by sequence number is
/// the cause. No error but a missing ack, or acks lost to ENOBUFS, leaves
/// the outcome unknown: never success.
pub(super) fn judge(
    built: &Built,
    expected: std::ops::Range<u32>,
    answers: &BTreeMap<u32, Ack>,
    overflow: bool,
) -> Result<(), NftError> {
    let what = |seq: u32| {
        built
            .what
            .get(&seq)
            .cloned()
            .unwrap_or_else(|| "the transaction (batch begin/end)".to_string())
    };
    let first_error = answers
        .values()
        .filter(|a| a.error != 0)
        .min_by_key(|a| (a.seq == 0 || a.seq == expected.start, a.seq));
    if let Some(a) = first_error {
        let batch_level = a.seq == 0 || !built.what.contains_key(&a.seq);
        return Err(match a.error {
            // ERESTART (85 on Linux): the generation moved under us.
            85 if batch_level => NftError::Raced,
            libc::EPERM => NftError::Permission {
                what: what(a.seq),
                source: errno(a.error),
            },
            libc::EOPNOTSUPP | libc::ENOENT if batch_level => NftError::NoNfTables {
                source: errno(a.error),
            },
            e => NftError::Rejected {
                what: what(a.seq),
                message: a.message.clone(),
                source: errno(e),
            },
        });
    }
    if overflow {
        return Err(NftError::OutcomeUnknown {
            detail: "acknowledgements were lost (ENOBUFS on the receive buffer)".into(),
        });
    }
    let missing: Vec<u32> = expected.filter(|s| !answers.contains_key(s)).collect();
    if let Some(first) = missing.first() {
        return Err(NftError::OutcomeUnknown {
            detail: format!(
                "no acknowledgement for {} message(s), the first being {}",
                missing.len(),
                what(*first)
            ),
        });
    }
    Ok(())
}

/// The (type, value) attributes of a netlink message body, as the kernel
/// lays them out: each 4-byte aligned; the top bits of a type are
/// NLA_F_NESTED and NLA_F_NET_BYTEORDER, left out here.
pub(super) fn attributes(mut body: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while body.len() >= 4 {
        let len = u16::from_ne_bytes([body[0], body[1]]) as usize;
        if len < 4 || len > body.len() {
            break;
        }
        let ty = u16::from_ne_bytes([body[2], body[3]]) & 0x3fff;
        out.push((ty, &body[4..len]));
        body = &body[len.next_multiple_of(4).min(body.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NLMSG_ERROR answering message `seq` with `-error`, the echoed
    /// request capped to its header, and an extended-ack text.
    fn error_message(seq: u32, error: i32, text: &str) -> Vec<u8> {
        let mut tlv = Vec::new();
        let body = [text.as_bytes(), &[0]].concat();
        tlv.extend_from_slice(&((4 + body.len()) as u16).to_ne_bytes());
        tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlv.extend_from_slice(&body);
        tlv.resize(tlv.len().next_multiple_of(4), 0);
        let mut m = Vec::new();
        let len = NLMSG_HDRLEN + 4 + NLMSG_HDRLEN + tlv.len();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        m.extend_from_slice(&((libc::NLM_F_CAPPED | libc::NLM_F_ACK_TLVS) as u16).to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(-error).to_ne_bytes());
        // The echoed request's header: length, type, flags, seq, pid.
        m.extend_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&tlv);
        m
    }

    #[test]
    fn an_error_ack_carries_its_sequence_number_errno_and_message() {
        let data = [
            error_message(7, libc::EEXIST, "set elements overlap"),
            error_message(8, 0, ""),
        ]
        .concat();
        let acks: Vec<Ack> = replies(&data).iter().filter_map(parse_ack).collect();
        assert_eq!(acks.len(), 2);
        assert_eq!((acks[0].seq, acks[0].error), (7, libc::EEXIST));
        assert_eq!(acks[0].message.as_deref(), Some("set elements overlap"));
        assert_eq!((acks[1].seq, acks[1].error), (8, 0));
    }

    #[test]
    fn a_truncated_message_ends_the_reply_instead_of_reading_past_it() {
        let mut data = error_message(7, libc::EEXIST, "x");
        let cut = data.len() - 3;
        data[..4].copy_from_slice(&((cut + 8) as u32).to_ne_bytes());
        data.truncate(cut);
        assert!(replies(&data).is_empty());
    }

    #[test]
    fn the_generation_goes_into_batch_begin_big_endian() {
        let mut begin = vec![0u8; BEGIN_LEN];
        begin[..4].copy_from_slice(&(BEGIN_LEN as u32).to_ne_bytes());
        begin[4..6].copy_from_slice(&(libc::NFNL_MSG_BATCH_BEGIN as u16).to_ne_bytes());
        let msg = begin_with_generation(&begin, 0x0102_0304).unwrap();
        assert_eq!(msg.len(), BEGIN_LEN + 8);
        assert_eq!(u32_at(&msg, 0) as usize, msg.len());
        assert_eq!(&msg[BEGIN_LEN + 4..], &[1, 2, 3, 4]);
        assert!(begin_with_generation(&begin[..10], 1).is_err());
    }
}
