//! Test helpers shared by the source kinds' tests: drain a stream page by page, and read a stored cursor.
//! Test-only; it owns no vendor knowledge (each kind's tests mount their own vendor responses).

use crate::connector::{kinds::common::StreamCursor, RejectedRecord, Source, SourceError};
use crate::vocab::{Cursor, Record};

/// What one run of a stream returned.
#[derive(Debug)]
pub struct Drained {
    pub records: Vec<Record>,
    pub rejected: Vec<RejectedRecord>,
    pub cursor: Cursor,
    pub pages: usize,
}

impl Drained {
    pub fn ids(&self) -> Vec<&str> {
        self.records.iter().map(|r| r.id.as_str()).collect()
    }

    pub fn state(&self) -> StreamCursor {
        serde_json::from_value(self.cursor.0.clone()).expect("a kind cursor")
    }
}

/// Fetches pages of `stream` from `cursor` until the source says done (at most 50 pages).
pub async fn drain(
    src: &dyn Source,
    stream: &str,
    cursor: Option<Cursor>,
) -> Result<Drained, SourceError> {
    let mut out = Drained {
        records: Vec::new(),
        rejected: Vec::new(),
        cursor: cursor.clone().unwrap_or_default(),
        pages: 0,
    };
    let mut cursor = cursor;
    loop {
        let page = src.fetch_page(stream, cursor.as_ref()).await?;
        out.pages += 1;
        out.records.extend(page.records);
        out.rejected.extend(page.rejected);
        out.cursor = page.cursor.clone();
        cursor = Some(page.cursor);
        if page.done {
            return Ok(out);
        }
        assert!(out.pages < 50, "runaway paging");
    }
}
