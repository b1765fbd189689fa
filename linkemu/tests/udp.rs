//! UDP through a link: integrity and order, delay, blackhole, loss, flows and reset.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{localhost, stays_pending, udp_echo, within, PATIENCE};
use tokio::net::UdpSocket;
use weft_linkemu::{start, Link, LinkSettings, Proto};

async fn echo_link(settings: LinkSettings) -> (Link, UdpSocket, common::Peers) {
    let (echo, peers) = udp_echo().await;
    let link = start("udp-test", Proto::Udp, localhost(), echo, settings)
        .await
        .expect("start link");
    let client = UdpSocket::bind(localhost()).await.expect("bind client");
    client
        .connect(link.local_addr())
        .await
        .expect("connect client");
    (link, client, peers)
}

async fn recv(client: &UdpSocket, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let n = within(PATIENCE, what, client.recv(&mut buf))
        .await
        .expect("receive");
    buf.truncate(n);
    buf
}

/// Sends `payload` and waits for its echo; returns the round trip.
async fn round_trip(client: &UdpSocket, payload: &[u8]) -> Duration {
    let sent = Instant::now();
    client.send(payload).await.expect("send");
    let echoed = recv(client, "echo of a ping").await;
    assert_eq!(echoed, payload);
    sent.elapsed()
}

fn datagram(i: usize) -> Vec<u8> {
    let len = 1 + (i * 97) % 1400;
    (0..len).map(|j| (i + j) as u8).collect()
}

#[tokio::test]
async fn datagrams_arrive_intact_and_in_order() {
    let (link, client, _) = echo_link(LinkSettings::default()).await;
    let big: Vec<u8> = (0..60_000).map(|j| (j % 251) as u8).collect();
    round_trip(&client, &big).await;
    // Batches small enough for the client's own receive buffer, which holds the echoes
    // until the test reads them.
    for batch in 0..5 {
        let sent: Vec<Vec<u8>> = (batch * 20..batch * 20 + 20).map(datagram).collect();
        for d in &sent {
            client.send(d).await.expect("send");
        }
        for (i, d) in sent.iter().enumerate() {
            let got = recv(&client, &format!("echo of datagram {i} of batch {batch}")).await;
            assert_eq!(&got, d, "datagram {i} of batch {batch}");
        }
    }
    let stats = link.stats();
    assert_eq!(stats.to_target.packets, 101);
    assert_eq!(stats.to_client.packets, 101);
    assert_eq!(stats.to_target.bytes, stats.to_client.bytes);
    assert_eq!(stats.flows, 1);
}

#[tokio::test]
async fn delay_applies_in_both_directions_and_keeps_order() {
    let delay = Duration::from_millis(30);
    let (link, client, _) = echo_link(LinkSettings {
        delay,
        ..LinkSettings::default()
    })
    .await;
    for _ in 0..3 {
        let rtt = round_trip(&client, b"ping").await;
        assert!(
            rtt >= 2 * delay,
            "round trip {rtt:?} is shorter than twice {delay:?}"
        );
    }
    for i in 0..50 {
        client.send(&datagram(i)).await.expect("send");
    }
    for i in 0..50 {
        assert_eq!(
            recv(&client, "delayed echo").await,
            datagram(i),
            "datagram {i}"
        );
    }
    assert_eq!(link.settings().delay, delay);
}

#[tokio::test]
async fn blackhole_drops_everything_then_heals_on_the_same_flow() {
    let (link, client, peers) = echo_link(LinkSettings::default()).await;
    round_trip(&client, b"before").await;

    link.set(LinkSettings {
        blackhole: true,
        ..LinkSettings::default()
    })
    .expect("set blackhole");
    client.send(b"into the hole").await.expect("send");
    let mut buf = [0u8; 64];
    assert!(
        stays_pending(Duration::from_millis(300), client.recv(&mut buf)).await,
        "a datagram crossed a blackholed link"
    );

    link.set(LinkSettings::default()).expect("heal");
    round_trip(&client, b"after").await;
    assert_eq!(link.stats().flows, 1);
    assert_eq!(
        peers.lock().expect("peers").len(),
        1,
        "the flow kept its upstream socket"
    );
    assert!(link.stats().to_target.dropped_packets >= 1);
}

#[tokio::test]
async fn loss_drops_about_the_given_share() {
    let sink = UdpSocket::bind(localhost()).await.expect("bind sink");
    let link = start(
        "lossy",
        Proto::Udp,
        localhost(),
        sink.local_addr().expect("sink address"),
        LinkSettings {
            loss_percent: 50.0,
            ..LinkSettings::default()
        },
    )
    .await
    .expect("start link");
    // Count on the side, so that the sink's receive buffer never fills.
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while sink.recv_from(&mut buf).await.is_ok() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let client = UdpSocket::bind(localhost()).await.expect("bind client");
    client.connect(link.local_addr()).await.expect("connect");
    for i in 0..400u32 {
        client.send(&i.to_be_bytes()).await.expect("send");
    }
    // Wait until the link has decided on all 400, and the sink has read all it forwarded.
    within(
        PATIENCE,
        "the link and the sink to see all datagrams",
        async {
            loop {
                let stats = link.stats().to_target;
                if stats.packets + stats.dropped_packets == 400
                    && received.load(Ordering::Relaxed) == stats.packets
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    let received = received.load(Ordering::Relaxed);
    assert!(
        100 < received && received < 300,
        "{received} of 400 datagrams crossed a 50 % lossy link"
    );
}

#[tokio::test]
async fn each_client_gets_its_own_flow_and_reset_forgets_them() {
    let (link, first, peers) = echo_link(LinkSettings::default()).await;
    let second = UdpSocket::bind(localhost()).await.expect("bind client");
    second.connect(link.local_addr()).await.expect("connect");
    round_trip(&first, b"one").await;
    round_trip(&second, b"two").await;
    assert_eq!(link.stats().flows, 2);
    assert_eq!(peers.lock().expect("peers").len(), 2);

    link.reset_all();
    round_trip(&first, b"one again").await;
    assert_eq!(
        peers.lock().expect("peers").len(),
        3,
        "after a reset the flow comes from a new upstream port"
    );
}

#[tokio::test]
async fn shutdown_frees_the_listen_address() {
    let (link, client, _) = echo_link(LinkSettings::default()).await;
    round_trip(&client, b"ping").await;
    let addr = link.local_addr();
    within(PATIENCE, "link shutdown", link.shutdown()).await;
    UdpSocket::bind(addr)
        .await
        .expect("the address is free again");
}

#[tokio::test]
async fn new_settings_apply_to_datagrams_already_waiting() {
    let slow = LinkSettings {
        delay: Duration::from_secs(10),
        ..LinkSettings::default()
    };
    let (link, client, _) = echo_link(slow).await;
    client.send(b"waiting").await.expect("send");
    within(PATIENCE, "the datagram to be queued", async {
        while link.stats().flows < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    link.set(LinkSettings::default()).expect("drop the delay");
    // With the old delay the echo would take 20 s; `recv` gives up after 5.
    assert_eq!(
        recv(&client, "echo once the delay is gone").await,
        b"waiting"
    );
}
