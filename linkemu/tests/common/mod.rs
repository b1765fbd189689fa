//! Helpers shared by the integration tests: deadlines that name what hung, and small servers.
#![allow(dead_code)] // each test binary uses a part

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// The deadline of a wait that should succeed: generous, since the machine may be loaded.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Whether `fut` is still pending after `wait` (for "nothing arrives" checks).
pub async fn stays_pending<T>(wait: Duration, fut: impl Future<Output = T>) -> bool {
    tokio::time::timeout(wait, fut).await.is_err()
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a socket address")
}

/// The distinct peers a server has heard from.
pub type Peers = Arc<Mutex<HashSet<SocketAddr>>>;

/// A UDP echo server; returns its address and the distinct peers it has heard from.
pub async fn udp_echo() -> (SocketAddr, Peers) {
    let socket = UdpSocket::bind(localhost()).await.expect("bind udp echo");
    let addr = socket.local_addr().expect("udp echo address");
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            seen.lock().expect("peers lock").insert(from);
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, peers)
}

/// A TCP echo server; returns its address and how many connections it has accepted.
pub async fn tcp_echo() -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind(localhost()).await.expect("bind tcp echo");
    let addr = listener.local_addr().expect("tcp echo address");
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            *count.lock().expect("count lock") += 1;
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    (addr, accepted)
}

/// A TCP server that reads and discards; returns its address and the bytes it has read.
pub async fn tcp_sink() -> (SocketAddr, Arc<Mutex<u64>>) {
    let listener = TcpListener::bind(localhost()).await.expect("bind tcp sink");
    let addr = listener.local_addr().expect("tcp sink address");
    let total = Arc::new(Mutex::new(0u64));
    let count = total.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    *count.lock().expect("count lock") += n as u64;
                }
            });
        }
    });
    (addr, total)
}
