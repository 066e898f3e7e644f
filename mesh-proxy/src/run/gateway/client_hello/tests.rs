use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// The first flight of a real rustls client for `name` (a DNS name or an IP address, which
/// rustls sends without SNI).
fn rustls_hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// A minimal ClientHello body with the given extensions block (already length-prefixed, or
/// absent).
fn hello_body(extensions: Option<&[u8]>) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend([7; 32]); // random
    b.push(0); // session id
    b.extend([0, 2, 0x13, 0x01]); // one cipher suite
    b.extend([1, 0]); // null compression
    if let Some(e) = extensions {
        b.extend(e);
    }
    b
}

fn sni_extension(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(*name);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend(list);
    let mut ext = vec![0, 0]; // server_name
    ext.extend((data.len() as u16).to_be_bytes());
    ext.extend(data);
    // An unrelated extension first: the parser must skip it.
    let mut all = vec![0, 0x2b, 0, 3, 2, 3, 4]; // supported_versions
    all.extend(ext);
    let mut block = (all.len() as u16).to_be_bytes().to_vec();
    block.extend(all);
    block
}

/// Wraps a handshake body into a ClientHello message and then into records of at most
/// `record` bytes.
fn records(body: &[u8], record: usize) -> Vec<u8> {
    let mut msg = vec![1];
    msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(body);
    let mut out = Vec::new();
    for chunk in msg.chunks(record) {
        out.extend([22, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

fn hello(name: Option<&str>) -> Peek {
    Peek::Hello {
        server_name: name.map(str::to_owned),
    }
}

#[test]
fn reads_the_sni_of_a_real_client() {
    let bytes = rustls_hello("Bookinfo.Example.com");
    assert_eq!(peek(&bytes), hello(Some("bookinfo.example.com")));
    // rustls sends no SNI for an IP address.
    assert_eq!(peek(&rustls_hello("127.0.0.1")), hello(None));
}

#[test]
fn every_strict_prefix_needs_more() {
    let bytes = rustls_hello("bookinfo.example.com");
    for n in 0..bytes.len() {
        assert_eq!(peek(&bytes[..n]), Peek::NeedMore, "prefix of {n} bytes");
    }
    // Bytes after the hello (the client's next flight) do not matter.
    let mut more = bytes.clone();
    more.extend(b"trailing");
    assert_eq!(peek(&more), hello(Some("bookinfo.example.com")));
}

#[test]
fn a_hello_split_over_records_is_reassembled() {
    let body = hello_body(Some(&sni_extension(&[(0, b"db.example.com.")])));
    for record in [1, 3, 7, 50] {
        let bytes = records(&body, record);
        assert_eq!(
            peek(&bytes),
            hello(Some("db.example.com")),
            "records of {record}"
        );
        for n in 0..bytes.len() {
            assert_eq!(peek(&bytes[..n]), Peek::NeedMore);
        }
    }
}

#[test]
fn hellos_without_server_name() {
    assert_eq!(peek(&records(&hello_body(None), 512)), hello(None));
    let no_sni = {
        let ext = [0, 0x2b, 0, 3, 2, 3, 4];
        let mut block = (ext.len() as u16).to_be_bytes().to_vec();
        block.extend(ext);
        block
    };
    assert_eq!(peek(&records(&hello_body(Some(&no_sni)), 512)), hello(None));
    // A server_name list with only a non-host_name entry.
    let other = sni_extension(&[(1, b"whatever")]);
    assert_eq!(peek(&records(&hello_body(Some(&other)), 512)), hello(None));
}

#[test]
fn garbage_is_invalid() {
    assert_eq!(
        peek(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Peek::Invalid("not a TLS handshake record")
    );
    assert_eq!(peek(b"\x16\x02"), Peek::Invalid("not a TLS record version"));
    assert_eq!(
        peek(&[22, 3, 1, 0, 0]),
        Peek::Invalid("bad TLS record length")
    );
    // A ServerHello (type 2) where a ClientHello should be.
    let mut server_hello = records(&hello_body(None), 512);
    server_hello[5] = 2;
    assert!(matches!(peek(&server_hello), Peek::Invalid(_)));
    // Lengths that point past the message.
    let mut body = hello_body(Some(&sni_extension(&[(0, b"a.example.com")])));
    let at = body.len() - 14; // the host name's length
    body[at] = 0xff;
    assert_eq!(
        peek(&records(&body, 512)),
        Peek::Invalid("truncated ClientHello")
    );
    // Not a host name.
    let bad = sni_extension(&[(0, b"bad name\x00")]);
    assert_eq!(
        peek(&records(&hello_body(Some(&bad)), 512)),
        Peek::Invalid("the SNI is not a host name")
    );
    // Absurd sizes are refused before reading them.
    assert_eq!(
        peek(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Peek::Invalid("ClientHello too large")
    );
}

proptest! {
    #[test]
    fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = peek(&bytes);
    }

    #[test]
    fn never_panics_on_a_damaged_hello(at in 0usize..4096, value in any::<u8>(), cut in 0usize..4096) {
        let mut bytes = rustls_hello("bookinfo.example.com");
        let at = at % bytes.len();
        bytes[at] = value;
        let cut = cut % (bytes.len() + 1);
        let _ = peek(&bytes[..cut]);
    }
}
