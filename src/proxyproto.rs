//! The PROXY protocol (HAProxy's v1 text and v2 binary headers), with
//! `[server] proxy_protocol = true`: a layer-4 load balancer (HAProxy, AWS
//! NLB, nginx `stream`) sends the client's address in a header before the
//! connection's first byte of TLS or HTTP. Exactly the header's bytes are
//! read (nothing of what follows), then parsed by the `ppp` crate.
//!
//! A connection whose header is missing or malformed is closed: with the
//! setting on, a header is required (a client talking to the gate directly
//! must not be able to choose its address by sending one).

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The v2 signature and fixed part.
const V2_FIXED: usize = 16;
/// The most address and TLV bytes accepted after the fixed part.
const V2_MAX_PAYLOAD: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// Reads one header; the client's address, or `None` when the balancer
/// speaks for itself (v1 `UNKNOWN`, v2 `LOCAL`: its own health checks).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = vec![stream.read_u8().await?];
    match buf[0] {
        b'P' => {
            while !buf.ends_with(b"\r\n") {
                if buf.len() >= V1_MAX {
                    return Err(ProxyError::Malformed("v1 header too long".into()));
                }
                buf.push(stream.read_u8().await?);
            }
        }
        b'\r' => {
            buf.resize(V2_FIXED, 0);
            stream.read_exact(&mut buf[1..]).await?;
            let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if len > V2_MAX_PAYLOAD {
                return Err(ProxyError::Malformed("v2 header too long".into()));
            }
            buf.resize(V2_FIXED + len, 0);
            stream.read_exact(&mut buf[V2_FIXED..]).await?;
        }
        _ => return Err(ProxyError::Missing),
    }
    parse(&buf)
}

/// The source address a complete header names.
pub fn parse(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::{HeaderResult, v1, v2};
    let bad = |e: &dyn std::fmt::Debug| ProxyError::Malformed(format!("{e:?}"));
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        }),
        HeaderResult::V1(Err(e)) => Err(bad(&e)),
        HeaderResult::V2(Err(e)) => Err(bad(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        let r = read_header(&mut cursor).await;
        let mut rest = Vec::new();
        cursor.read_to_end(&mut rest).await.unwrap();
        (r, rest)
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend((payload.len() as u16).to_be_bytes());
        h.extend(payload);
        h
    }

    #[tokio::test]
    async fn headers_give_the_source_and_leave_the_rest_unread() {
        let (r, rest) =
            read(b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 5000\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(r.unwrap(), Some("203.0.113.9:51000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (r, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").await;
        assert_eq!(r.unwrap(), Some("[2001:db8::1]:1".parse().unwrap()));
        let (r, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(r.unwrap(), None);

        let mut ipv4 = vec![203, 0, 113, 9, 10, 0, 0, 1];
        ipv4.extend(51000u16.to_be_bytes());
        ipv4.extend(5000u16.to_be_bytes());
        let mut bytes = v2(0x1, 0x11, &ipv4);
        bytes.extend(b"\x16\x03\x01");
        let (r, rest) = read(&bytes).await;
        assert_eq!(r.unwrap(), Some("203.0.113.9:51000".parse().unwrap()));
        assert_eq!(rest, b"\x16\x03\x01", "the TLS hello is left for TLS");
        let (r, _) = read(&v2(0x0, 0x00, &[])).await;
        assert_eq!(r.unwrap(), None, "LOCAL: the balancer's own check");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 and a lot more text that goes on and on beyond the longest header a v1 sender may write\r\n",
            b"PROXY TCP4 1.2.3.4",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
        ] {
            assert!(read(bad).await.0.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
