//! The paged source: the loop every kind that pages a JSON list over HTTP shares, so that such a kind
//! writes only what differs about its vendor — the request for a page, how to read a page's items and
//! next token out of the response, and how one item becomes a record.
//!
//! The loop is here: the stream check against the kind's catalog entry, the stored cursor
//! (`common::StreamCursor`: the run in progress, its incremental filter, the high-water mark), the
//! request through the HTTP engine (auth, rate limit, retries), a body that does not decode named by its
//! stream, one rejection per unmappable item, and the guard that stops a run when the vendor hands back a
//! page token it already served. Kinds whose paging does not fit this shape (a query restarted past a page
//! cap, a search API with its own limits, a streamed export) implement `Source` themselves and use the
//! same pieces from `common`.

use serde_json::Value;

use super::common::{self, Mark, RunState, StreamCursor};
use crate::config::KindSpec;
use crate::connector::{Page, RejectedRecord, Source, SourceError};
use crate::http::{Call, HttpClient, JsonResponse};
use crate::vocab::{BoxFuture, Cursor, Record};

/// What one vendor's paged list API is: the only part of a paged source a kind writes.
pub trait PagedApi: Send + Sync + 'static {
    /// The kind's catalog entry; a page may be asked only of its `streams`.
    const SPEC: &'static KindSpec;

    /// The request for the next page of `stream` in `run`: `run.token` is `None` on the run's first page,
    /// and `run.since` is the run's incremental filter (`None` on a first sync).
    fn request(&self, stream: &str, run: &RunState) -> Result<PageRequest, String>;

    /// The items of one page and the token of the next (`None` when this page is the last). An `Err`
    /// names what is wrong with the response; the run stops with it and nothing of the page is stored.
    fn read_page(
        &self,
        stream: &str,
        run: &RunState,
        response: JsonResponse,
    ) -> Result<ListPage, String>;

    /// One item as a record and the mark the vendor orders it by (`common::marked` when that is its
    /// `updated_at` and id), or why it cannot be one.
    fn map_item(&self, stream: &str, item: Value) -> Result<(Record, Mark), RejectedRecord>;
}

/// A `GET` of one page: a path under the connector's base URL and its query.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    pub path: String,
    pub query: Vec<(&'static str, String)>,
}

/// What a page's response holds.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub next: Option<String>,
}

/// A [`Source`] made of the shared loop and one vendor's [`PagedApi`].
pub struct PagedSource<A> {
    api: A,
    http: HttpClient,
    streams: Vec<String>,
}

impl<A: PagedApi> PagedSource<A> {
    /// `streams` are the connector's configured streams, synced in order.
    pub fn with_api(api: A, http: HttpClient, streams: Vec<String>) -> PagedSource<A> {
        PagedSource { api, http, streams }
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        if !A::SPEC.streams.contains(&stream) {
            return Err(SourceError::UnknownStream(stream.to_string()));
        }
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let run = state.current_run();
        let request = self
            .api
            .request(stream, &run)
            .map_err(|e| common::malformed(stream, connector, e))?;
        let call = Call {
            query: &request.query,
            ..Call::new(&reqwest::Method::GET, &request.path)
        };
        let response = common::in_stream(self.http.execute(call).await, stream)?;
        let ListPage { items, next } = self
            .api
            .read_page(stream, &run, response)
            .map_err(|e| common::malformed(stream, connector, e))?;
        let count = items.len();
        let (page, max) = common::map_page(items, |item| self.api.map_item(stream, item));
        state.finish_page(run, page, max, count, next, stream, connector)
    }
}

impl<A: PagedApi> Source for PagedSource<A> {
    fn streams(&self) -> Vec<String> {
        self.streams.clone()
    }

    fn fetch_page<'a>(
        &'a self,
        stream: &'a str,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(self.fetch(stream, cursor))
    }
}
