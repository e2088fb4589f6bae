//! A 2xx response body read line by line ([`LineStream`]): JSON-lines and CSV exports too large to hold
//! in memory. At most one network chunk and one partial line are buffered, and a line longer than
//! [`MAX_LINE_BYTES`] is an error rather than unbounded growth. The request itself (auth, retries, rate
//! limit) is `HttpClient::execute_lines` in `mod.rs`; what a line means is the kind's business.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::{network_error, HttpError, RequestTarget};

/// The longest line a [`LineStream`] buffers before giving up: a guard against a body with no newlines.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// A 2xx response body read line by line (JSON lines, CSV), holding at most one network chunk and one
/// partial line in memory.
pub struct LineStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    resp: reqwest::Response,
    target: RequestTarget,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    done: bool,
}

impl LineStream {
    pub(super) fn new(resp: reqwest::Response, target: RequestTarget) -> LineStream {
        LineStream {
            status: resp.status(),
            headers: resp.headers().clone(),
            resp,
            target,
            buf: Vec::new(),
            start: 0,
            done: false,
        }
    }

    pub(super) fn unexpected(&self, expected: &str) -> HttpError {
        HttpError::Decode {
            target: self.target.clone(),
            expected: expected.into(),
            reason: "the body was requested as a stream".into(),
        }
    }

    /// The next line without its `\n` (or `\r\n`); `None` at the end of the body. A final line without a
    /// newline is returned too.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if let Some(rel) = self.buf[self.start..].iter().position(|b| *b == b'\n') {
                let end = self.start + rel;
                let mut line = self.buf[self.start..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.start = end + 1;
                return Ok(Some(line));
            }
            if self.done {
                if self.start >= self.buf.len() {
                    return Ok(None);
                }
                let line = self.buf[self.start..].to_vec();
                self.start = self.buf.len();
                return Ok(Some(line));
            }
            if self.buf.len() - self.start > MAX_LINE_BYTES {
                return Err(HttpError::Decode {
                    target: self.target.clone(),
                    expected: "newline-delimited lines".into(),
                    reason: format!("a line longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => {
                    self.buf.drain(..self.start);
                    self.start = 0;
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(None) => self.done = true,
                Err(e) => return Err(network_error(&self.target, &e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use crate::http::testing::bearer_client;
    use crate::http::Call;

    #[tokio::test]
    async fn splits_lines_across_chunks_and_keeps_a_last_line_without_newline() {
        let server = MockServer::start().await;
        let body = format!("{{\"a\":1}}\r\n\n{}\n{{\"c\":3}}", "x".repeat(100_000));
        Mock::given(path("/export"))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&server)
            .await;
        let (client, _) = bearer_client(&server.uri());
        let mut lines = client
            .execute_lines(Call::new(&reqwest::Method::GET, "/export"))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            got.push(l.len());
        }
        assert_eq!(got, [7, 0, 100_000, 7]);
    }

    #[tokio::test]
    async fn throttling_before_the_body_is_retried() {
        let server = MockServer::start().await;
        Mock::given(path("/export"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(path("/export"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{}\n"))
            .mount(&server)
            .await;
        let (client, clock) = bearer_client(&server.uri());
        let mut lines = client
            .execute_lines(Call::new(&reqwest::Method::GET, "/export"))
            .await
            .unwrap();
        assert_eq!(lines.next_line().await.unwrap(), Some(b"{}".to_vec()));
        assert_eq!(lines.next_line().await.unwrap(), None);
        assert_eq!(clock.slept(), std::time::Duration::from_secs(2));
    }
}
