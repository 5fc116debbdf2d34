//! Endpoint addresses: opaque bytes, normally ASCII `host:port:endpointId`.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

/// The address of an endpoint, as it travels on the wire.
///
/// Usually `host:port:id` in ASCII, but any bytes are carried (an unaddressable endpoint
/// is a UUID, and a peer may send garbage); [`parse`](Self::parse) interprets lazily.
/// Ordering is bytewise, which is what the crossed-request tie-break compares.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndPointAddress(Bytes);

impl EndPointAddress {
    /// `host:port:endpoint_id`. On the wire an IPv6 host is written as is, without
    /// brackets (the original's form; parsing splits at the last two colons), so
    /// `new("[::1]", ..)` and `new("::1", ..)` give the same address.
    pub fn new(host: &str, port: u16, endpoint_id: u32) -> Self {
        let host = unbracket(host);
        EndPointAddress(Bytes::from(format!("{host}:{port}:{endpoint_id}")))
    }

    /// A fresh random address for an endpoint nobody can dial: a version 4 UUID in its
    /// usual text form, as the original gives its unaddressable endpoints.
    pub fn unaddressable() -> Self {
        let mut b: [u8; 16] = rand::random();
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        let hex = |r: std::ops::Range<usize>| -> String {
            b[r].iter().map(|x| format!("{x:02x}")).collect()
        };
        let text = format!(
            "{}-{}-{}-{}-{}",
            hex(0..4),
            hex(4..6),
            hex(6..8),
            hex(8..10),
            hex(10..16)
        );
        EndPointAddress(Bytes::from(text))
    }

    /// Wraps arbitrary bytes without checking them.
    pub fn from_bytes(b: impl Into<Bytes>) -> Self {
        EndPointAddress(b.into())
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The wire bytes, shared.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// `(host, port, endpoint id)`, splitting at the last two colons (a bracketed IPv6
    /// host loses its brackets); `None` unless the bytes are UTF-8 with a non-empty host
    /// and decimal port and id.
    pub fn parse(&self) -> Option<(String, u16, u32)> {
        let s = std::str::from_utf8(&self.0).ok()?;
        let (host, port, id) = split(s)?;
        Some((unbracket(host).to_owned(), port, id))
    }
}

/// `host`, `port`, `id` of `host:port:id`, split at the last two colons.
fn split(s: &str) -> Option<(&str, u16, u32)> {
    let (rest, id) = s.rsplit_once(':')?;
    let (host, port) = rest.rsplit_once(':')?;
    if unbracket(host).is_empty() || !is_decimal(port) || !is_decimal(id) {
        return None;
    }
    Some((host, port.parse().ok()?, id.parse().ok()?))
}

/// `::1` for `[::1]`; anything else unchanged.
fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for EndPointAddress {
    type Err = std::convert::Infallible;

    /// Accepts what [`Display`](fmt::Display) prints: `host:port:id`, with an IPv6 host in
    /// brackets (`[::1]:4000:0`) or bare (`::1:4000:0`); both give the bare wire form.
    /// Any other text is taken as is, unvalidated (addresses are opaque bytes).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((host, port, id)) = split(s) {
            if host.starts_with('[') && unbracket(host) != host {
                return Ok(EndPointAddress::new(host, port, id));
            }
        }
        Ok(EndPointAddress(Bytes::copy_from_slice(s.as_bytes())))
    }
}

/// `host:port:id`, with an IPv6 host in brackets (`[::1]:4000:0`) so that the port and id
/// stand out; [`FromStr`] reads it back. Other bytes are shown as they are (lossily, if
/// not UTF-8); [`as_bytes`](EndPointAddress::as_bytes) has the exact wire form.
impl fmt::Display for EndPointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((host, port, id)) = std::str::from_utf8(&self.0).ok().and_then(split) {
            if host.contains(':') && !host.starts_with('[') {
                return write!(f, "[{host}]:{port}:{id}");
            }
        }
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for EndPointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndPointAddress({:?})", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaddressable_is_a_fresh_v4_uuid() {
        let a = EndPointAddress::unaddressable();
        let t = std::str::from_utf8(a.as_bytes()).unwrap();
        let groups: Vec<usize> = t.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{t}");
        assert!(t.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{t}");
        assert_eq!(&t[14..15], "4", "version nibble: {t}");
        assert!("89ab".contains(&t[19..20]), "variant nibble: {t}");
        assert!(a.parse().is_none(), "{t} must not parse as host:port:id");
        assert_ne!(a, EndPointAddress::unaddressable());
    }

    #[test]
    fn parse_splits_at_last_two_colons() {
        let a = EndPointAddress::new("::1", 4000, 7);
        assert_eq!(a.as_bytes(), b"::1:4000:7");
        assert_eq!(a.parse(), Some(("::1".to_owned(), 4000, 7)));
        assert_eq!(
            EndPointAddress::new("127.0.0.1", 1, 0).parse(),
            Some(("127.0.0.1".into(), 1, 0))
        );
        for bad in [
            "",
            "a:b",
            ":1:2",
            "[]:1:2",
            "h:x:1",
            "h:1:",
            "h:99999:1",
            "h:1:-1",
        ] {
            assert_eq!(
                bad.parse::<EndPointAddress>().unwrap().parse(),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn ipv6_hosts_print_in_brackets_and_parse_either_way() {
        let bare: EndPointAddress = "::1:4000:7".parse().unwrap();
        let bracketed: EndPointAddress = "[::1]:4000:7".parse().unwrap();
        assert_eq!(bare, bracketed);
        assert_eq!(bracketed.as_bytes(), b"::1:4000:7");
        assert_eq!(bare.to_string(), "[::1]:4000:7");
        assert_eq!(bare.to_string().parse::<EndPointAddress>().unwrap(), bare);
        assert_eq!(
            EndPointAddress::new("[fe80::1]", 1, 0).as_bytes(),
            b"fe80::1:1:0"
        );
        assert_eq!(
            EndPointAddress::from_bytes(&b"[::1]:4000:7"[..]).parse(),
            Some(("::1".to_owned(), 4000, 7))
        );
        // IPv4, names and opaque bytes are printed as they are.
        for s in ["127.0.0.1:1:0", "localhost:1:0", "a9c4-uuid", "[::1]:x"] {
            assert_eq!(s.parse::<EndPointAddress>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn ordering_is_bytewise() {
        let a: EndPointAddress = "127.0.0.1:10:0".parse().unwrap();
        let b: EndPointAddress = "127.0.0.1:9:0".parse().unwrap();
        assert!(a < b);
    }
}
