//! The streamed body of a GetObject: chunks as they arrive, transport failures typed, and a
//! short body reported as an error rather than passed off as the end of the data.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::error::{ClientError, Op, TransportKind};
use super::request::transport_error;

pub struct ByteStream {
    key: String,
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    expected: Option<u64>,
    received: u64,
    done: bool,
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteStream")
            .field("key", &self.key)
            .field("expected", &self.expected)
            .field("received", &self.received)
            .finish()
    }
}

impl ByteStream {
    pub(crate) fn new(key: &str, response: reqwest::Response) -> Self {
        ByteStream {
            key: key.to_string(),
            expected: response.content_length(),
            inner: Box::pin(response.bytes_stream()),
            received: 0,
            done: false,
        }
    }

    /// Length announced by the response (Content-Length).
    pub fn expected_len(&self) -> Option<u64> {
        self.expected
    }

    /// Reads the rest of the body into one buffer.
    pub async fn collect(mut self) -> Result<Bytes, ClientError> {
        let cap = self.expected.unwrap_or(0).min(64 << 20) as usize;
        let mut buf = BytesMut::with_capacity(cap);
        let mut single: Option<Bytes> = None;
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            // The common case (one chunk) needs no copy.
            if buf.is_empty() && single.is_none() {
                single = Some(chunk);
                continue;
            }
            if let Some(first) = single.take() {
                buf.extend_from_slice(&first);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(single.unwrap_or_else(|| buf.freeze()))
    }
}

impl Stream for ByteStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match ready!(this.inner.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => {
                this.received += chunk.len() as u64;
                super::stats::bytes_read(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(transport_error(Op::GetObject, &this.key, e))))
            }
            None => {
                this.done = true;
                match this.expected {
                    Some(n) if n != this.received => {
                        Poll::Ready(Some(Err(ClientError::Transport {
                            op: Op::GetObject,
                            key: this.key.clone(),
                            kind: TransportKind::Body,
                            source: format!("body ended after {} of {n} bytes", this.received)
                                .into(),
                        })))
                    }
                    _ => Poll::Ready(None),
                }
            }
        }
    }
}
