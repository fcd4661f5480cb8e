//! Who is at the other end of a connection to the settings page. On Linux the kernel
//! says who owns each TCP socket (`/proc/net/tcp`): a connection from a program of
//! another user of this machine (another person's browser tab, or a program holding a
//! cookie that leaked to another port of 127.0.0.1, where cookies are not kept apart)
//! is refused whatever it carries. Elsewhere nothing is known and the session cookie
//! alone decides.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The user id owning the other end of a connection, when it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerOwner(pub Option<u32>);

/// The owner of the socket at the other end of `stream` (a loopback connection: both
/// ends are sockets of this machine).
pub fn owner_of(stream: &tokio::net::TcpStream) -> PeerOwner {
    #[cfg(target_os = "linux")]
    {
        let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
            return PeerOwner(None);
        };
        let table = if peer.is_ipv4() {
            "/proc/net/tcp"
        } else {
            "/proc/net/tcp6"
        };
        PeerOwner(
            std::fs::read_to_string(table)
                .ok()
                .and_then(|t| socket_owner(&t, peer, local)),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        PeerOwner(None)
    }
}

/// The user this process runs as, when it is known.
pub fn own_uid() -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// In a `/proc/net/tcp` (or `tcp6`) table, the uid owning the socket whose local
/// address is `peer` and whose remote address is `local`: the other end of our
/// connection from `peer` to `local`.
pub fn socket_owner(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        (parse_addr(f[1])? == peer && parse_addr(f[2])? == local)
            .then(|| f[7].parse().ok())
            .flatten()
    })
}

/// `0100007F:1F90` (the kernel prints each 32-bit word of the address as a native
/// integer in hex, and the port in hex).
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The address as this machine's kernel prints it.
    fn native(ip: Ipv4Addr, port: u16) -> String {
        format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()))
    }

    #[test]
    fn the_other_end_of_a_loopback_connection_is_found_with_its_owner() {
        let lo = Ipv4Addr::LOCALHOST;
        let listening = native(lo, 8080).replace(":1F90", "");
        let (page, browser) = (native(lo, 8080), native(lo, 51234));
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {listening}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
             1: {page} {browser} 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
             2: {browser} {page} 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1\n",
        );
        let page: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let browser: SocketAddr = "127.0.0.1:51234".parse().unwrap();
        assert_eq!(socket_owner(&table, browser, page), Some(1000));
        assert_eq!(socket_owner(&table, page, browser), Some(0), "our own end");
        let stranger: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(socket_owner(&table, stranger, page), None);
        assert_eq!(socket_owner("garbage\nmore garbage", browser, page), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_of_our_own_is_owned_by_us() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        assert_eq!(owner_of(&server_side), PeerOwner(own_uid()));
        assert!(own_uid().is_some());
    }
}
