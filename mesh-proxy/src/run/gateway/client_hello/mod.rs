//! The server name (SNI) of a TLS ClientHello, read from the bytes a client sent first, before
//! any TLS library sees them: a gateway chooses the server (and, for PASSTHROUGH, the route and
//! the upstream) by it, then replays the same bytes to rustls or to the upstream.
//!
//! The parser follows RFC 8446 §4.1.2 (and RFC 5246's record layer): handshake records
//! (content type 22) carry the ClientHello, possibly split over several records; its
//! extensions may hold `server_name` (RFC 6066 §3) with one `host_name` entry. Every length is
//! checked against what is there: truncated input asks for more, garbage is refused, nothing
//! panics or allocates more than the input.

#[cfg(test)]
mod tests;

/// The most bytes read while looking for a complete ClientHello. Real ones are a few hundred
/// bytes to a few KiB (post-quantum key shares included); a peer sending more is refused.
pub(crate) const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    /// A complete ClientHello and the server name it asks for (lowercase, without a trailing
    /// dot), if any.
    Hello { server_name: Option<String> },
    /// A prefix of what may be a ClientHello: read more.
    NeedMore,
    /// Not a TLS ClientHello.
    Invalid(&'static str),
}

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;
/// The largest record the TLS record layer allows (2^14 plus expansion).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// Reads a ClientHello from the start of a connection's bytes.
pub(crate) fn peek(buf: &[u8]) -> Peek {
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        // The record header: type, version (3.x), length.
        let Some(header) = rest.get(..5) else {
            return match rest.first() {
                Some(&t) if t != HANDSHAKE => Peek::Invalid("not a TLS handshake record"),
                Some(_) if rest.get(1).is_some_and(|&v| v != 3) => {
                    Peek::Invalid("not a TLS record version")
                }
                _ => Peek::NeedMore,
            };
        };
        if header[0] != HANDSHAKE {
            return Peek::Invalid("not a TLS handshake record");
        }
        if header[1] != 3 {
            return Peek::Invalid("not a TLS record version");
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Peek::Invalid("bad TLS record length");
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Peek::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        // The handshake message header: type, 24-bit length.
        if let Some(h) = handshake.get(..4) {
            if h[0] != CLIENT_HELLO {
                return Peek::Invalid("the first handshake message is not a ClientHello");
            }
            let body_len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
            if body_len + 4 > MAX_CLIENT_HELLO {
                return Peek::Invalid("ClientHello too large");
            }
            if let Some(body) = handshake.get(4..4 + body_len) {
                return match server_name(body) {
                    Ok(server_name) => Peek::Hello { server_name },
                    Err(e) => Peek::Invalid(e),
                };
            }
        }
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(usize::from(n)).map(Reader)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(usize::from(n)).map(Reader)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The `server_name` of a ClientHello body.
fn server_name(body: &[u8]) -> Result<Option<String>, &'static str> {
    const TRUNCATED: &str = "truncated ClientHello";
    let mut r = Reader(body);
    let version = r.u16().ok_or(TRUNCATED)?;
    if version >> 8 != 3 {
        return Err("not a TLS ClientHello version");
    }
    r.take(32).ok_or(TRUNCATED)?; // random
    let session_id = r.vec8().ok_or(TRUNCATED)?;
    if session_id.0.len() > 32 {
        return Err("ClientHello session id longer than 32 bytes");
    }
    let suites = r.vec16().ok_or(TRUNCATED)?;
    if suites.0.is_empty() || suites.0.len() % 2 != 0 {
        return Err("bad ClientHello cipher suites");
    }
    r.vec8().ok_or(TRUNCATED)?; // compression methods
    if r.is_empty() {
        return Ok(None); // no extensions at all (SSL 3.0-style hello)
    }
    let mut extensions = r.vec16().ok_or(TRUNCATED)?;
    while !extensions.is_empty() {
        let kind = extensions.u16().ok_or(TRUNCATED)?;
        let mut data = extensions.vec16().ok_or(TRUNCATED)?;
        if kind != SERVER_NAME {
            continue;
        }
        let mut list = data.vec16().ok_or(TRUNCATED)?;
        while !list.is_empty() {
            let name_type = list.u8().ok_or(TRUNCATED)?;
            let name = list.vec16().ok_or(TRUNCATED)?;
            if name_type == HOST_NAME {
                return host_name(name.0).map(Some);
            }
        }
        return Ok(None);
    }
    Ok(None)
}

/// A DNS host name as the SNI carries it (ASCII, no trailing dot), lowercased.
fn host_name(raw: &[u8]) -> Result<String, &'static str> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    let ok = !raw.is_empty()
        && raw.len() <= 253
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
    if !ok {
        return Err("the SNI is not a host name");
    }
    Ok(String::from_utf8_lossy(raw).to_ascii_lowercase())
}
