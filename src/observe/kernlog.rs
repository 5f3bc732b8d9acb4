//! The kernel log's line for a logged packet, read back: what
//! nf_log_syslog writes when a ruleset's `log` statement has no NFLOG
//! group (a profile without `nflog_group`).
//!
//! The kernel writes (net/netfilter/nf_log_syslog.c,
//! `nf_log_dump_packet_common`, then `dump_mac_header` for a packet that
//! came in, then `dump_ipv4_packet` or `dump_ipv6_packet`) the prefix as
//! the rule gave it, immediately followed by `IN=eth0 OUT= `, then
//! space-separated `KEY=VALUE` fields and bare flags:
//!
//! ```text
//! fwharden drop: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=203.0.113.5 DST=198.18.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=40000 DPT=23 WINDOW=64240 RES=0x00 SYN URGP=0
//! fwharden drop: IN=eth0 OUT= MAC=... SRC=2001:db8::5 DST=2001:db8::1 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=1 PROTO=UDP SPT=5353 DPT=2525 LEN=40
//! ```
//!
//! `PROTO=` is `TCP`, `UDP`, `UDPLITE`, `ICMP`, `ICMPv6`, `AH`, `ESP` or the
//! protocol's number; TCP and UDP carry `SPT=`/`DPT=` (not in a fragment),
//! ICMP `TYPE=`/`CODE=`. An ICMP error quotes the packet it is about
//! between `[` and `]`, with fields of the same names: only the fields
//! before the first `[` are the packet's own. A bridge adds `PHYSIN=`; an
//! Ethernet device logged with `flags ether` writes `MACSRC=`/`MACDST=`
//! instead of `MAC=`: the parser reads keys, not positions.

use std::net::IpAddr;

/// What one kernel log line says of its packet: the fields
/// [`super::log::Entry`] carries, named as the NFLOG path names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol number, as
    /// [`super::log::headers`] says it.
    pub proto: String,
    /// Destination port (TCP, UDP); ICMP type for ICMP.
    pub port: Option<u16>,
    /// The interface it came in on, else the one it went out of.
    pub iface: Option<String>,
}

/// The fields after the prefix (`IN=eth0 OUT= ...`), or `None` for a line
/// that is not a logged IP packet (an ARP packet, a truncated header, any
/// other text).
pub fn parse(fields: &str) -> Option<Packet> {
    if !fields.starts_with("IN=") {
        return None;
    }
    // The packet's own fields end where a quoted one begins.
    let own = fields.split('[').next().unwrap_or_default();
    let value = |key: &str| -> Option<&str> {
        own.split(' ')
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let src: IpAddr = value("SRC")?.parse().ok()?;
    let dst: IpAddr = value("DST")?.parse().ok()?;
    let iface = [value("IN"), value("OUT")]
        .into_iter()
        .flatten()
        .find(|i| !i.is_empty())
        .map(str::to_string);
    let number = |key: &str| value(key).and_then(|v| v.parse::<u16>().ok());
    let (proto, port) = match value("PROTO")? {
        "TCP" => ("tcp".to_string(), number("DPT")),
        "UDP" => ("udp".to_string(), number("DPT")),
        "ICMP" => ("icmp".to_string(), number("TYPE")),
        "ICMPv6" => ("icmpv6".to_string(), number("TYPE")),
        // As the NFLOG path names them: by number, no port.
        "UDPLITE" => ("136".to_string(), None),
        "ESP" => ("50".to_string(), None),
        "AH" => ("51".to_string(), None),
        n if n.parse::<u8>().is_ok() => (n.to_string(), None),
        _ => return None,
    };
    Some(Packet {
        src,
        dst,
        proto,
        port,
        iface,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as nf_log_syslog formats them, field for field.
    const TCP4: &str = "IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=203.0.113.5 DST=198.18.0.1 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=40000 DPT=23 WINDOW=64240 RES=0x00 SYN URGP=0 ";
    const UDP4: &str = "IN=wg0 OUT= MAC= SRC=10.0.0.7 DST=10.0.0.1 LEN=33 TOS=0x00 PREC=0x00 TTL=64 ID=17 DF PROTO=UDP SPT=41000 DPT=2525 LEN=13 ";
    const ICMP4: &str = "IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=192.0.2.9 DST=198.18.0.1 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF PROTO=ICMP TYPE=8 CODE=0 ID=7 SEQ=1 ";
    /// An ICMP error quoting a TCP packet: the quoted DPT is not ours.
    const ICMP4_ERROR: &str = "IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=192.0.2.1 DST=198.18.0.1 LEN=88 TOS=0x00 PREC=0xC0 TTL=64 ID=9 PROTO=ICMP TYPE=3 CODE=3 [SRC=198.18.0.1 DST=192.0.2.1 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=22 DPT=40000 WINDOW=0 RES=0x00 SYN URGP=0 ] ";
    const TCP6: &str = "IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd SRC=2001:0db8:0000:0000:0000:0000:0000:0005 DST=2001:0db8:0000:0000:0000:0000:0000:0001 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=672371 PROTO=TCP SPT=40000 DPT=6379 WINDOW=64800 RES=0x00 SYN URGP=0 ";
    const ICMP6: &str = "IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd SRC=2001:0db8:0000:0000:0000:0000:0000:0005 DST=2001:0db8:0000:0000:0000:0000:0000:0001 LEN=104 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=128 CODE=0 ID=3 SEQ=1 ";
    /// Logged on the way out: no MAC, no IN.
    const OUT4: &str = "IN= OUT=eth0 SRC=198.18.0.1 DST=203.0.113.5 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=5 DF PROTO=TCP SPT=50000 DPT=25 WINDOW=64240 RES=0x00 SYN URGP=0 UID=0 GID=0 ";

    fn p(s: &str) -> Packet {
        parse(s).unwrap_or_else(|| panic!("parses: {s}"))
    }

    #[test]
    fn ipv4_tcp_udp_and_icmp_name_their_ends_port_and_interface() {
        let t = p(TCP4);
        assert_eq!(t.src, "203.0.113.5".parse::<IpAddr>().unwrap());
        assert_eq!(t.dst, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((t.proto.as_str(), t.port), ("tcp", Some(23)));
        assert_eq!(t.iface.as_deref(), Some("eth0"));
        let u = p(UDP4);
        assert_eq!((u.proto.as_str(), u.port), ("udp", Some(2525)));
        assert_eq!(u.iface.as_deref(), Some("wg0"));
        let i = p(ICMP4);
        assert_eq!((i.proto.as_str(), i.port), ("icmp", Some(8)));
        let e = p(ICMP4_ERROR);
        assert_eq!(e.src, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!((e.proto.as_str(), e.port), ("icmp", Some(3)));
    }

    #[test]
    fn ipv6_addresses_are_read_in_the_kernels_long_form() {
        let t = p(TCP6);
        assert_eq!(t.src, "2001:db8::5".parse::<IpAddr>().unwrap());
        assert_eq!(t.dst, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!((t.proto.as_str(), t.port), ("tcp", Some(6379)));
        let i = p(ICMP6);
        assert_eq!((i.proto.as_str(), i.port), ("icmpv6", Some(128)));
    }

    #[test]
    fn without_mac_or_in_the_outgoing_interface_is_named() {
        let o = p(OUT4);
        assert_eq!(o.iface.as_deref(), Some("eth0"));
        assert_eq!(o.port, Some(25));
    }

    #[test]
    fn other_protocols_are_named_as_the_nflog_path_names_them() {
        let esp = TCP4.replace("PROTO=TCP SPT=40000 DPT=23", "PROTO=ESP SPI=0x1000");
        assert_eq!((p(&esp).proto.as_str(), p(&esp).port), ("50", None));
        let gre = TCP4.replace("PROTO=TCP SPT=40000 DPT=23", "PROTO=47");
        assert_eq!(p(&gre).proto, "47");
        // A fragment's TCP header is not there: no port.
        let frag = TCP4.replace("SPT=40000 DPT=23 ", "");
        assert_eq!((p(&frag).proto.as_str(), p(&frag).port), ("tcp", None));
    }

    #[test]
    fn malformed_and_other_lines_are_not_packets() {
        for line in [
            "",
            "IN=eth0 OUT= TRUNCATED",
            "IN=eth0 OUT= MACSRC=52:54:00:12:34:56 MACDST=ff:ff:ff:ff:ff:ff MACPROTO=0806 ARP HTYPE=1 PTYPE=0x0800 OPCODE=1",
            "IN=eth0 OUT= SRC=203.0.113.999 DST=198.18.0.1 PROTO=TCP SPT=1 DPT=2 ",
            "IN=eth0 OUT= SRC=203.0.113.5 DST=198.18.0.1 LEN=60 ",
            "IN=eth0 OUT= SRC=203.0.113.5 DST=198.18.0.1 PROTO=WHAT ",
            "e1000e 0000:00:1f.6 eth0: NIC Link is Up 1000 Mbps Full Duplex",
            "SRC=203.0.113.5 DST=198.18.0.1 PROTO=TCP SPT=1 DPT=2 ",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }
}
