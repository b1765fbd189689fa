//! The TCP relay: each accepted connection gets its own upstream connection, and the bytes of
//! each direction go through a bounded, delayed queue.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::gate::{next_due, Dir, OnBlackhole, Packet};
use crate::{Shared, TCP_BUFFER_BYTES, TCP_MAX_CONNECTIONS};

/// The most bytes read from a socket at once: one chunk.
const CHUNK: usize = 64 * 1024;
/// Chunks a direction of a connection holds (besides its byte budget).
const QUEUE_CHUNKS: usize = 4096;

/// Binds `listen` and starts accepting; returns the bound address and the relay's task.
pub(crate) async fn spawn(
    listen: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    Ok((local, tokio::spawn(accept_loop(listener, target, shared))))
}

/// Accepts connections (at most [`TCP_MAX_CONNECTIONS`] at once) until the link stops.
async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept(), if connections.len() < TCP_MAX_CONNECTIONS => match accepted {
                Ok((client, peer)) => {
                    // Watching for resets from here on, so none between accept and the task's
                    // start is missed.
                    let resets = shared.resets.subscribe();
                    connections.spawn(run_connection(client, peer, target, shared.clone(), resets));
                }
                Err(e) => {
                    tracing::warn!("tcp relay to {target}: accept failed: {e}");
                    // Out of file descriptors and the like: give it a moment rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            _ = stop.changed() => break,
        }
        shared
            .counters
            .flows
            .store(connections.len() as u64, Ordering::Relaxed);
    }
    connections.shutdown().await;
    shared.counters.flows.store(0, Ordering::Relaxed);
}

/// Relays one accepted connection until either side closes it, it fails, or the link resets.
async fn run_connection(
    mut client: TcpStream,
    peer: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    mut resets: watch::Receiver<u64>,
) {
    let mut upstream = tokio::select! {
        connected = connect_when_open(target, &shared) => match connected {
            Ok(upstream) => upstream,
            Err(e) => {
                tracing::debug!("tcp relay {peer} -> {target}: cannot connect: {e}");
                abort(&client);
                return;
            }
        },
        _ = resets.changed() => {
            abort(&client);
            return;
        }
    };
    if let Err(e) = client.set_nodelay(true).and(upstream.set_nodelay(true)) {
        tracing::debug!("tcp relay {peer} -> {target}: cannot set nodelay: {e}");
    }
    let outcome = tokio::select! {
        relayed = relay(&mut client, &mut upstream, &shared) => relayed,
        _ = resets.changed() => Err(io::Error::new(io::ErrorKind::ConnectionReset, "link reset")),
    };
    if let Err(e) = outcome {
        tracing::debug!("tcp relay {peer} -> {target}: closed: {e}");
        abort(&client);
        abort(&upstream);
    }
}

/// Connects to the target once the link is not blackholed.
async fn connect_when_open(target: SocketAddr, shared: &Shared) -> io::Result<TcpStream> {
    let mut settings = shared.settings.subscribe();
    while settings.borrow_and_update().blackhole {
        if settings.changed().await.is_err() {
            return Err(io::Error::other("link stopped"));
        }
    }
    TcpStream::connect(target).await
}

/// Makes the coming close of `stream` a reset rather than an orderly end.
fn abort(stream: &TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!("cannot make a tcp close a reset: {e}");
    }
}

/// Copies both ways until both directions have ended, or either fails.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    tokio::try_join!(
        pipe(client_read, upstream_write, shared.clone(), Dir::ToTarget),
        pipe(upstream_read, client_write, shared.clone(), Dir::ToClient),
    )?;
    Ok(())
}

/// One direction: reads chunks into a bounded queue and writes each when it is due; at the
/// end of the input, ends the output once the queue is empty.
async fn pipe(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    shared: Arc<Shared>,
    dir: Dir,
) -> io::Result<()> {
    let budget = Arc::new(Semaphore::new(TCP_BUFFER_BYTES));
    let (queue, mut queued) = mpsc::channel(QUEUE_CHUNKS);
    let mut settings = shared.settings.subscribe();

    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            // Room for a whole chunk first: with the budget spent, stop reading.
            let mut room = budget
                .clone()
                .acquire_many_owned(CHUNK as u32)
                .await
                .map_err(io::Error::other)?;
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            let Some(used) = room.split(n) else {
                return Err(io::Error::other("read more than a chunk"));
            };
            drop(room);
            let packet = Packet::new(buf[..n].to_vec(), used, shared.clone(), dir);
            if queue.send(packet).await.is_err() {
                return Ok(()); // the writer is gone, and with it the connection
            }
        }
    };

    let write = async move {
        while let Some(packet) = next_due(&mut queued, &mut settings, OnBlackhole::Hold).await {
            to.write_all(&packet.data).await?;
            packet.delivered();
        }
        to.shutdown().await
    };

    tokio::try_join!(read, write)?;
    Ok(())
}
