//! Task logs from remote workers: one stream of the worker's link per attempt, so that bulk
//! output never waits behind (or delays) the session's control messages. The worker opens the
//! stream when the attempt's log has its first bytes (an attempt that writes nothing opens
//! none), sends a [`LogHeader`] frame, then the log's bytes as the
//! attempt writes them (read from its own log file, [`CHUNK_BYTES`] at a time, every
//! [`TAIL_MS`]); the stream's end is the log's end. The node writes them where a local attempt
//! writes its log, so the UI shows a remote attempt's log live as a local one's; it takes a
//! stream only for an attempt it placed on that worker (the link's certificate says which),
//! and only up to its log size limit.

use crate::link::{Channel, Link};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_actors::{LogHeader, LogShipper};
use weft_core::ids::AttemptId;

/// The most a log frame carries.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// How often a worker looks for more of a running attempt's log.
pub const TAIL_MS: u64 = 50;

/// The link a worker has now, if any (its log streams go there).
pub type CurrentLink = Arc<Mutex<Option<Link>>>;

/// A worker's end: sends each attempt's log over the current link.
#[derive(Debug, Clone, Default)]
pub struct LogUploader {
    link: CurrentLink,
}

impl LogUploader {
    pub fn new(link: CurrentLink) -> LogUploader {
        LogUploader { link }
    }
}

impl LogShipper for LogUploader {
    fn ship(&self, attempt: AttemptId, path: PathBuf, ended: tokio::sync::oneshot::Receiver<()>) {
        let link = self
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // Without a link the log stays in the worker's files only.
        let Some(link) = link else { return };
        tokio::spawn(async move {
            if let Err(error) = upload(&link, &attempt, path, ended).await {
                tracing::warn!(%attempt, %error, "the log did not reach the node in full");
            }
        });
    }
}

async fn upload(
    link: &Link,
    attempt: &AttemptId,
    path: PathBuf,
    mut ended: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), LogError> {
    // The stream opens with the log's first bytes: an attempt that writes nothing costs the
    // link nothing.
    let mut channel: Option<Channel> = None;
    let mut file = None;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        // Whether the attempt had ended before this read: then the read gets everything.
        let was_over = !matches!(
            ended.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        );
        if file.is_none() {
            file = tokio::fs::File::open(&path).await.ok();
        }
        if let Some(file) = file.as_mut() {
            loop {
                let read = file.read(&mut buffer).await?;
                if read == 0 {
                    break;
                }
                let channel = match channel.as_mut() {
                    Some(channel) => channel,
                    None => {
                        let mut opened = link.open().await?;
                        let header = LogHeader {
                            attempt: attempt.clone(),
                        };
                        opened.send(&weft_actors::wire::encode(&header)?).await?;
                        channel.insert(opened)
                    }
                };
                channel.send(&buffer[..read]).await?;
            }
        }
        if was_over {
            break;
        }
        tokio::select! {
            _ = &mut ended => {}
            () = tokio::time::sleep(Duration::from_millis(TAIL_MS)) => {}
        }
    }
    if let Some(channel) = channel.as_mut() {
        channel.finish();
    }
    Ok(())
}

/// Where a node writes a worker's log of an attempt: `None` refuses it. Given the worker's
/// name (from its certificate) and the attempt.
pub type LogSink = Arc<
    dyn Fn(String, AttemptId) -> Pin<Box<dyn Future<Output = Option<PathBuf>> + Send>>
        + Send
        + Sync,
>;

/// The node's end of one log stream from `worker`: the header, then the bytes, written to the
/// path `sink` gives, at most `bytes_max` of them.
pub async fn receive(mut channel: Channel, worker: String, sink: LogSink, bytes_max: u64) {
    let header = match channel.recv().await {
        Ok(Some(frame)) => weft_actors::wire::decode_or_refuse::<LogHeader>(&frame, "log header"),
        _ => None,
    };
    let Some(LogHeader { attempt }) = header else {
        return;
    };
    let Some(path) = sink(worker.clone(), attempt.clone()).await else {
        tracing::warn!(%worker, %attempt, "log refused: the attempt was not placed on that worker");
        metrics::counter!("weft_remote_logs_refused_total").increment(1);
        return;
    };
    if let Err(error) = write(&mut channel, &path, bytes_max).await {
        tracing::warn!(%worker, %attempt, path = %path.display(), %error, "log stream ended early");
    }
}

async fn write(
    channel: &mut Channel,
    path: &std::path::Path,
    bytes_max: u64,
) -> Result<(), LogError> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .await?;
    let mut written = 0u64;
    while let Some(frame) = channel.recv().await? {
        let room = bytes_max.saturating_sub(written) as usize;
        let take = frame.len().min(room);
        file.write_all(&frame[..take]).await?;
        file.flush().await?;
        written += take as u64;
        if take < frame.len() {
            // The worker's executor bounds the log already; this bounds what a broken worker
            // can write here.
            tracing::warn!(path = %path.display(), bytes_max, "remote log cut at its limit");
            break;
        }
    }
    Ok(())
}

/// What ends a log stream early.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] weft_actors::wire::WireError),
}
