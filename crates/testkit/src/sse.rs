//! A Server-Sent Events client for tests, parsing exactly as the HTML spec's
//! `EventSource` does, so a test passes only if a browser would read the same.

use std::time::Duration;

use anyhow::{Result, bail};

/// A Server-Sent Events stream read event by event, parsed by [`SseParser`].
pub struct SseStream {
    response: reqwest::Response,
    parser: SseParser,
}

/// One SSE event: the last event id at its dispatch, its `event` type and its `data`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseStream {
    /// Opens `url` with the given headers; fails unless it answers 200.
    ///
    /// A `last-event-id` header among them seeds the stream's last event id, as
    /// an `EventSource` that reconnects keeps it.
    pub async fn open(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, (u16, serde_json::Value)> {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        if response.status().as_u16() != 200 {
            let status = response.status().as_u16();
            return Err((
                status,
                response.json().await.unwrap_or(serde_json::Value::Null),
            ));
        }
        let last_event_id = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("last-event-id"))
            .map(|(_, value)| (*value).to_owned())
            .unwrap_or_default();
        Ok(SseStream {
            response,
            parser: SseParser::new(last_event_id),
        })
    }

    /// The next event (not comment), within 10 s; fails if the stream ends first.
    pub async fn next_event(&mut self) -> SseEvent {
        match self.next_or_end(Duration::from_secs(10)).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the SSE stream ended"),
            Err(e) => panic!("{e}"),
        }
    }

    /// The next event, or `None` when the server ended the stream; fails after `within`.
    pub async fn next_or_end(&mut self, within: Duration) -> Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            if self.parser.ended {
                return Ok(None);
            }
            let Ok(chunk) = tokio::time::timeout_at(deadline, self.response.chunk()).await else {
                bail!("no SSE event within {within:?}")
            };
            match chunk {
                Ok(Some(chunk)) => self.parser.feed(&chunk),
                // A reset connection ends the stream too: EventSource would reconnect.
                Ok(None) | Err(_) => self.parser.end(),
            }
        }
    }

    /// The id a reconnect would send as `Last-Event-ID` (empty when none was set).
    pub fn last_event_id(&self) -> &str {
        &self.parser.last_event_id
    }

    /// The reconnection time the server asked for, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.parser.retry
    }
}

/// The event-stream parser of the HTML spec, as `EventSource` runs it: lines end
/// at CRLF, LF or CR (even split across chunks); `data:` lines are joined with
/// `\n`; one space after the colon is dropped; comments and unknown fields are
/// ignored; an event with no data is not dispatched; the last event id and
/// the `retry:` hint persist across events; an unfinished event at the end of
/// the stream is discarded.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes received but not yet split into lines (a line may span chunks).
    buffer: Vec<u8>,
    /// The fields of the event being read.
    pending: SseEvent,
    /// The stream's last event id buffer (what a reconnect sends as `Last-Event-ID`).
    pub last_event_id: String,
    /// The last valid `retry:` hint, in milliseconds.
    pub retry: Option<u64>,
    /// The stream ended: no more bytes will come.
    pub ended: bool,
    /// Whether the first bytes have been seen (a leading BOM is dropped).
    started: bool,
}

impl SseParser {
    /// A parser whose last event id starts as `last_event_id`.
    pub fn new(last_event_id: String) -> Self {
        SseParser {
            last_event_id,
            ..SseParser::default()
        }
    }

    /// Adds bytes received from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        if !self.started && self.buffer.len() >= 3 {
            self.started = true;
            if self.buffer.starts_with("\u{feff}".as_bytes()) {
                self.buffer.drain(..3);
            }
        }
    }

    /// Marks the end of the stream.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// The next event the bytes so far complete, if any.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(line) = self.next_line() {
            if let Some(event) = self.process(&line) {
                return Some(event);
            }
        }
        None
    }

    /// The next complete line, without its terminator. A CR at the very end
    /// of the buffer waits for the next chunk: it may be the start of a CRLF.
    fn next_line(&mut self) -> Option<String> {
        let at = self
            .buffer
            .iter()
            .position(|b| matches!(b, b'\r' | b'\n'))?;
        let skip = match (self.buffer[at], self.buffer.get(at + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) if !self.ended => return None,
            _ => 1,
        };
        let line = String::from_utf8_lossy(&self.buffer[..at]).into_owned();
        self.buffer.drain(..at + skip);
        Some(line)
    }

    /// Applies one line; returns the event an empty line dispatches.
    fn process(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let mut event = std::mem::take(&mut self.pending);
            if event.data.is_empty() {
                return None;
            }
            event.data.pop(); // the LF after the last data line
            if event.event.is_empty() {
                event.event = "message".to_owned();
            }
            event.id = Some(self.last_event_id.clone()).filter(|id| !id.is_empty());
            return Some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.pending.event = value.to_owned(),
            "data" => {
                self.pending.data.push_str(value);
                self.pending.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod sse_parser_tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk);
            while let Some(event) = parser.next_event() {
                out.push(event);
            }
        }
        parser.end();
        while let Some(event) = parser.next_event() {
            out.push(event);
        }
        (out, parser)
    }

    fn event(id: Option<&str>, name: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_owned),
            event: name.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn data_lines_are_joined_with_lf_and_every_line_ending_counts() {
        let (got, _) = events(&[b"data: {\r\ndata:  \"a\": 1\rdata\ndata: }\n\n"]);
        assert_eq!(got, [event(None, "message", "{\n \"a\": 1\n\n}")]);
    }

    #[test]
    fn lines_and_crlf_split_across_chunks_are_joined() {
        let (got, _) = events(&[b"event: mes", b"sage\r", b"\ndata: x\r", b"\r", b"\n"]);
        assert_eq!(got, [event(None, "message", "x")]);
    }

    #[test]
    fn the_last_event_id_and_retry_persist_and_comments_are_skipped() {
        let (got, parser) = events(&[
            b"\xef\xbb\xbf: ping\n\nretry: 2500\nid: a.1\nevent: x\ndata: 1\n\nretry: soon\ndata: 2\n\n",
        ]);
        assert_eq!(
            got,
            [
                event(Some("a.1"), "x", "1"),
                event(Some("a.1"), "message", "2")
            ]
        );
        assert_eq!(parser.retry, Some(2500));
    }

    #[test]
    fn events_without_data_and_unfinished_events_are_not_dispatched() {
        let (got, parser) = events(&[b"id: 7\nevent: x\n\ndata: late\n\ndata: cut"]);
        assert_eq!(got, [event(Some("7"), "message", "late")]);
        assert_eq!(parser.last_event_id, "7");
    }
}
