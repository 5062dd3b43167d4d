//! A TCP proxy that makes a local connection behave like a long link, for
//! the network benchmark (`benches/network/run.sh`): the kernel here has no
//! `netem`, so delay and bandwidth are emulated in user space.
//!
//! Every chunk read from one side is written to the other `--delay-ms`
//! after it was read, in order, in each direction (a round trip through the
//! proxy costs twice the delay). With `--rate-mbit`, each direction of the
//! link (shared by all connections, like one wire) serialises chunks at that
//! rate before the delay starts, as a bottleneck link would. Reads are large
//! (256 KiB) and the bytes held per direction are bounded, so a fast sender
//! is slowed by backpressure instead of growing memory. Not emulated: loss,
//! reordering, slow start.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

const READ_SIZE: usize = 256 << 10;

#[derive(Parser, Debug)]
#[command(about = "TCP proxy emulating a link with one-way delay and a bandwidth cap")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Address every accepted connection is forwarded to.
    #[arg(long)]
    upstream: SocketAddr,
    /// One-way delay in milliseconds, applied in each direction (RTT = 2 × this).
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Bandwidth of each direction in Mbit/s, shared by all connections (0: none).
    #[arg(long, default_value_t = 0.0)]
    rate_mbit: f64,
    /// Bytes held in flight per direction of one connection before reading pauses.
    #[arg(long, default_value_t = 32 << 20)]
    window_bytes: usize,
}

/// One direction of the emulated wire: when it is next free to serialise.
struct Wire {
    bytes_per_sec: Option<f64>,
    free_at: Mutex<Instant>,
}

impl Wire {
    fn new(rate_mbit: f64) -> Self {
        Wire {
            bytes_per_sec: (rate_mbit > 0.0).then_some(rate_mbit * 1e6 / 8.0),
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// When a chunk of `len` bytes read now has left the sender's end.
    fn sent_at(&self, now: Instant, len: usize) -> Instant {
        let Some(rate) = self.bytes_per_sec else {
            return now;
        };
        let mut free_at = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        let start = (*free_at).max(now);
        *free_at = start + Duration::from_secs_f64(len as f64 / rate);
        *free_at
    }
}

struct Link {
    delay: Duration,
    window: usize,
    to_upstream: Wire,
    to_client: Wire,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let link = Arc::new(Link {
        delay: Duration::from_secs_f64(args.delay_ms.max(0.0) / 1000.0),
        window: args.window_bytes.clamp(READ_SIZE, u32::MAX as usize >> 3),
        to_upstream: Wire::new(args.rate_mbit),
        to_client: Wire::new(args.rate_mbit),
    });
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "netproxy: {} -> {}, one-way delay {} ms, rate {}",
        args.listen,
        args.upstream,
        args.delay_ms,
        if args.rate_mbit > 0.0 {
            format!("{} Mbit/s", args.rate_mbit)
        } else {
            "unlimited".into()
        }
    );
    loop {
        let (client, _) = listener.accept().await?;
        let link = Arc::clone(&link);
        let upstream = args.upstream;
        tokio::spawn(async move {
            if let Err(err) = serve(client, upstream, link).await {
                eprintln!("netproxy: connection ended: {err}");
            }
        });
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, link: Arc<Link>) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = direction(client_r, server_w, Arc::clone(&link), true);
    let down = direction(server_r, client_w, link, false);
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

/// Carries one direction: a reader stamps each chunk with its delivery time,
/// a writer delivers chunks in order at that time.
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Arc<Link>,
    upstream: bool,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let budget = Arc::new(Semaphore::new(link.window));
    let writer_budget = Arc::clone(&budget);
    let delay = link.delay;
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let written = to.write_all(&chunk).await;
            writer_budget.add_permits(chunk.len());
            written?;
        }
        to.shutdown().await
    };
    let reader = async move {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        loop {
            buf.reserve(READ_SIZE);
            // At most READ_SIZE per chunk: the window counts whole chunks.
            let n = (&mut from)
                .take(READ_SIZE as u64)
                .read_buf(&mut buf)
                .await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let chunk = buf.split().freeze();
            // Never more than the window in flight: the sender waits, as
            // TCP flow control would make it.
            let permits = budget
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(std::io::Error::other)?;
            permits.forget();
            let wire = if upstream {
                &link.to_upstream
            } else {
                &link.to_client
            };
            let due = wire.sent_at(Instant::now(), chunk.len()) + delay;
            if tx.send((due, chunk)).is_err() {
                return Ok(());
            }
        }
    };
    let (r, w) = tokio::join!(reader, writer);
    r.and(w)
}
