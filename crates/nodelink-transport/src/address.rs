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
    /// `host:port:endpoint_id`. An IPv6 host is written as is (no brackets): parsing
    /// splits at the last two colons.
    pub fn new(host: &str, port: u16, endpoint_id: u32) -> Self {
        EndPointAddress(Bytes::from(format!("{host}:{port}:{endpoint_id}")))
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

    /// `(host, port, endpoint id)`, splitting at the last two colons; `None` unless the
    /// bytes are UTF-8 with a non-empty host and decimal port and id.
    pub fn parse(&self) -> Option<(String, u16, u32)> {
        let s = std::str::from_utf8(&self.0).ok()?;
        let (rest, id) = s.rsplit_once(':')?;
        let (host, port) = rest.rsplit_once(':')?;
        if host.is_empty() || !is_decimal(port) || !is_decimal(id) {
            return None;
        }
        Some((host.to_owned(), port.parse().ok()?, id.parse().ok()?))
    }
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for EndPointAddress {
    type Err = std::convert::Infallible;

    /// Takes the text as is; it is not validated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(EndPointAddress(Bytes::copy_from_slice(s.as_bytes())))
    }
}

impl fmt::Display for EndPointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    fn parse_splits_at_last_two_colons() {
        let a = EndPointAddress::new("::1", 4000, 7);
        assert_eq!(a.as_bytes(), b"::1:4000:7");
        assert_eq!(a.parse(), Some(("::1".to_owned(), 4000, 7)));
        assert_eq!(
            EndPointAddress::new("127.0.0.1", 1, 0).parse(),
            Some(("127.0.0.1".into(), 1, 0))
        );
        for bad in ["", "a:b", ":1:2", "h:x:1", "h:1:", "h:99999:1", "h:1:-1"] {
            assert_eq!(
                bad.parse::<EndPointAddress>().unwrap().parse(),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn ordering_is_bytewise() {
        let a: EndPointAddress = "127.0.0.1:10:0".parse().unwrap();
        let b: EndPointAddress = "127.0.0.1:9:0".parse().unwrap();
        assert!(a < b);
    }
}
