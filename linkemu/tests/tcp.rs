//! TCP through a link: integrity, delay, blackhole (held bytes, held connections,
//! backpressure) and reset.

mod common;

use std::time::{Duration, Instant};

use common::{localhost, stays_pending, tcp_echo, tcp_sink, within, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_linkemu::{start, Link, LinkSettings, Proto};

async fn echo_link(settings: LinkSettings) -> (Link, std::sync::Arc<std::sync::Mutex<usize>>) {
    let (echo, accepted) = tcp_echo().await;
    let link = start("tcp-test", Proto::Tcp, localhost(), echo, settings)
        .await
        .expect("start link");
    (link, accepted)
}

async fn connect(link: &Link) -> TcpStream {
    let stream = within(
        PATIENCE,
        "connect to the link",
        TcpStream::connect(link.local_addr()),
    )
    .await
    .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Writes `payload` and reads its echo; returns the round trip.
async fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Duration {
    let sent = Instant::now();
    stream.write_all(payload).await.expect("write");
    let mut echoed = vec![0u8; payload.len()];
    within(PATIENCE, "echo of a ping", stream.read_exact(&mut echoed))
        .await
        .expect("read echo");
    assert_eq!(echoed, payload);
    sent.elapsed()
}

fn blackholed() -> LinkSettings {
    LinkSettings {
        blackhole: true,
        ..LinkSettings::default()
    }
}

#[tokio::test]
async fn a_mebibyte_arrives_intact() {
    let (link, _) = echo_link(LinkSettings::default()).await;
    let stream = connect(&link).await;
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&sent).await.expect("write");
        write.shutdown().await.expect("shutdown");
    });
    let mut echoed = Vec::with_capacity(data.len());
    within(
        Duration::from_secs(10),
        "echo of 1 MiB",
        read.read_to_end(&mut echoed),
    )
    .await
    .expect("read");
    within(PATIENCE, "the writer", writer)
        .await
        .expect("writer task");
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echoed bytes differ");
    let stats = link.stats();
    assert_eq!(stats.to_target.bytes, data.len() as u64);
    assert_eq!(stats.to_client.bytes, data.len() as u64);
}

#[tokio::test]
async fn delay_applies_in_both_directions() {
    let delay = Duration::from_millis(30);
    let (link, _) = echo_link(LinkSettings {
        delay,
        ..LinkSettings::default()
    })
    .await;
    let mut stream = connect(&link).await;
    for _ in 0..3 {
        let rtt = round_trip(&mut stream, b"ping").await;
        assert!(
            rtt >= 2 * delay,
            "round trip {rtt:?} is shorter than twice {delay:?}"
        );
    }
}

#[tokio::test]
async fn blackhole_holds_bytes_and_new_connections_until_healed() {
    let (link, accepted) = echo_link(LinkSettings::default()).await;
    let mut open = connect(&link).await;
    round_trip(&mut open, b"before").await;

    link.set(blackholed()).expect("set blackhole");
    open.write_all(b"held").await.expect("write");
    let mut late = connect(&link).await;
    late.write_all(b"late").await.expect("write");
    let mut buf = [0u8; 4];
    assert!(
        stays_pending(Duration::from_millis(300), open.read_exact(&mut buf)).await,
        "bytes crossed a blackholed link"
    );
    assert_eq!(
        *accepted.lock().expect("accepted"),
        1,
        "a new connection went upstream through a blackholed link"
    );

    link.set(LinkSettings::default()).expect("heal");
    // The 300 ms read above was cancelled before anything arrived, so the bytes are whole.
    within(
        PATIENCE,
        "held bytes after healing",
        open.read_exact(&mut buf),
    )
    .await
    .expect("read");
    assert_eq!(&buf, b"held");
    within(
        PATIENCE,
        "held connection after healing",
        late.read_exact(&mut buf),
    )
    .await
    .expect("read");
    assert_eq!(&buf, b"late");
    assert_eq!(*accepted.lock().expect("accepted"), 2);
}

#[tokio::test]
async fn blackhole_stops_reading_when_its_buffer_is_full() {
    let (sink, received) = tcp_sink().await;
    let link = start("backpressure", Proto::Tcp, localhost(), sink, blackholed())
        .await
        .expect("start link");
    // The connection is held before it reaches upstream; open the link so it connects, then
    // cut it again before sending.
    let mut stream = connect(&link).await;
    link.set(LinkSettings::default()).expect("open");
    stream.write_all(b"x").await.expect("write");
    within(PATIENCE, "first byte at the sink", async {
        while *received.lock().expect("received") < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    link.set(blackholed()).expect("cut");

    // Far more than the relay's buffer and the sockets' buffers can hold together.
    let data = vec![7u8; 64 * 1024 * 1024];
    let (_read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move { write.write_all(&data).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "the writer was never held back");
    assert_eq!(*received.lock().expect("received"), 1);

    link.set(LinkSettings::default()).expect("heal");
    within(Duration::from_secs(10), "the held writer", writer)
        .await
        .expect("writer task")
        .expect("write");
    within(Duration::from_secs(10), "all bytes at the sink", async {
        while *received.lock().expect("received") < 1 + 64 * 1024 * 1024 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn reset_all_closes_current_connections() {
    let (link, _) = echo_link(LinkSettings::default()).await;
    let mut stream = connect(&link).await;
    round_trip(&mut stream, b"ping").await;
    assert_eq!(link.stats().flows, 1);

    link.reset_all();
    let mut buf = [0u8; 16];
    match within(
        PATIENCE,
        "the reset connection to close",
        stream.read(&mut buf),
    )
    .await
    {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("read {n} bytes from a reset connection"),
    }
    // The link itself goes on.
    let mut again = connect(&link).await;
    round_trip(&mut again, b"again").await;
}

#[tokio::test]
async fn reset_all_closes_held_connections_too() {
    let (link, accepted) = echo_link(blackholed()).await;
    let mut held = connect(&link).await;
    within(PATIENCE, "the relay to accept the connection", async {
        while link.stats().flows < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    link.reset_all();
    let mut buf = [0u8; 16];
    match within(
        PATIENCE,
        "the held connection to close",
        held.read(&mut buf),
    )
    .await
    {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("read {n} bytes from a reset connection"),
    }
    link.set(LinkSettings::default()).expect("heal");
    assert_eq!(*accepted.lock().expect("accepted"), 0);
}

#[tokio::test]
async fn new_settings_apply_to_bytes_already_waiting() {
    let slow = LinkSettings {
        delay: Duration::from_secs(10),
        ..LinkSettings::default()
    };
    let (link, _) = echo_link(slow).await;
    let mut stream = connect(&link).await;
    stream.write_all(b"waiting").await.expect("write");
    within(PATIENCE, "the connection to be relayed", async {
        while link.stats().flows < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    link.set(LinkSettings::default()).expect("drop the delay");
    // With the old delay the echo would take 20 s; the read gives up after 5.
    let mut echoed = [0u8; 7];
    within(
        PATIENCE,
        "echo once the delay is gone",
        stream.read_exact(&mut echoed),
    )
    .await
    .expect("read");
    assert_eq!(&echoed, b"waiting");
}
