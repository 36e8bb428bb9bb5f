//! Network shaping for `serve --bandwidth`: [`Paced`] wraps one connection's socket and lets
//! bytes through, in each direction separately, at no more than a fixed rate (a token bucket),
//! so a loopback benchmark sees the per-connection throughput of a real OSS connection. The
//! first-byte delay of `--latency` is applied per answer in [`super::http`]. Neither costs
//! anything when off: an unshaped connection is not wrapped at all.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// One direction's token bucket.
struct Bucket {
    /// Bytes per second.
    rate: f64,
    /// Most tokens kept: 50 ms of traffic (at least 4 KiB), so pacing is smooth at any rate.
    burst: f64,
    tokens: f64,
    last: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        let burst = (rate / 20.0).max(4096.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
            sleep: None,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// How many of `want` bytes may pass now; pending until at least a useful amount may
    /// (a quarter of the burst, or all of `want` if less), so the pace is not one byte a tick.
    fn poll_allow(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            self.refill();
            let need = (want as f64).min(self.burst / 4.0).max(1.0);
            if self.tokens >= need {
                return Poll::Ready((self.tokens as usize).min(want).max(1));
            }
            let wait = Duration::from_secs_f64((need - self.tokens) / self.rate);
            self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }

    fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

/// A connection paced to `rate` bytes per second in each direction.
pub struct Paced<S> {
    inner: S,
    read: Bucket,
    write: Bucket,
}

impl<S> Paced<S> {
    pub fn new(inner: S, rate: u64) -> Self {
        Paced {
            inner,
            read: Bucket::new(rate),
            write: Bucket::new(rate),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let allowed = ready!(this.read.poll_allow(cx, buf.remaining()));
        let got = {
            let dst = &mut buf.initialize_unfilled()[..allowed];
            let mut sub = ReadBuf::new(dst);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
            sub.filled().len()
        };
        buf.advance(got);
        this.read.take(got);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        let allowed = ready!(this.write.poll_allow(cx, data.len()));
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &data[..allowed]))?;
        this.write.take(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn paces_both_directions() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let rate = 1 << 20; // 1 MiB/s
        let mut paced = Paced::new(a, rate);
        let start = std::time::Instant::now();
        let writer = tokio::spawn(async move {
            let mut b = b;
            let mut got = vec![0u8; 256 * 1024];
            b.read_exact(&mut got).await.unwrap();
            b.write_all(&got).await.unwrap();
            b
        });
        paced.write_all(&vec![7u8; 256 * 1024]).await.unwrap();
        let mut back = vec![0u8; 256 * 1024];
        paced.read_exact(&mut back).await.unwrap();
        writer.await.unwrap();
        assert!(back.iter().all(|&x| x == 7));
        // 256 KiB each way at 1 MiB/s, less the initial 50 ms bursts: at least ~0.4 s.
        assert!(
            start.elapsed() >= Duration::from_millis(380),
            "{:?}",
            start.elapsed()
        );
    }
}
