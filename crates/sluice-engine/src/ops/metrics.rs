//! `GET /metrics` in the Prometheus text format (version 0.0.4), served by `sluice run` when
//! `[metrics] listen` is set, beside `GET /status` (the JSON of `sluice status --json`) and
//! `GET /`, the status page (HTML, CSS and JS built into the binary from `ops/status_page/`;
//! it fetches `/status` every two seconds).
//!
//! Names follow Prometheus' conventions: a `sluice_` prefix, base units (seconds), `_total`
//! on counters. The figures are read at scrape time from the live state the pipeline already
//! keeps ([`Progress`], the [`LagMeter`](crate::ops::lag::LagMeter)'s cumulative histogram,
//! the [`CopyBoard`](crate::backfill::CopyBoard)), so nothing on the apply path changes for
//! metrics except one histogram observation per lag sample. Labels are table names and copy
//! states only: never GTIDs, keys or row values (no PII).
//!
//! The listener is hand-written on tokio's `TcpListener` rather than built on an HTTP crate:
//! it answers a few fixed routes, `GET` only, with no request body, no keep-alive and no TLS, which is a
//! few dozen lines, while hyper (with hyper-util and http-body-util) would add a sizeable
//! dependency tree for it. It reads at most [`MAX_REQUEST_HEAD`] bytes within
//! [`READ_TIMEOUT`], answers, and closes; anything it does not understand gets a 4xx, never
//! a panic.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::apply::Progress;
use crate::backfill::CopyState;
use crate::ops::lag::AbortOnDrop;
use crate::ops::status::LiveStatus;

/// The status page and its assets, built into the binary (no CDN, no build step).
const PAGE_HTML: &str = include_str!("status_page/index.html");
const PAGE_CSS: &str = include_str!("status_page/page.css");
const PAGE_JS: &str = include_str!("status_page/page.js");

/// The longest request head (request line and headers) read; longer requests get a 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections answered at once; more are closed without an answer.
const MAX_CONNECTIONS: usize = 32;

type Labels = Vec<(&'static str, String)>;

/// The copy states exported by `sluice_backfill_table_state` (one series per state, 1 for the
/// table's current one).
const COPY_STATES: [&str; 5] = ["pending", "copying", "throttled", "ready", "failed"];

fn copy_state_name(state: &CopyState) -> &'static str {
    match state {
        CopyState::Pending => "pending",
        CopyState::Copying => "copying",
        CopyState::Throttled => "throttled",
        CopyState::Ready => "ready",
        // The reason may quote source data; only the state is exported.
        CopyState::Failed(_) => "failed",
    }
}

/// The metrics page for `progress`, in the Prometheus text format.
pub fn render(progress: &Progress) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    // A registry built per scrape: every figure is a snapshot of state kept elsewhere (the
    // histogram is shared with the lag meter, not copied), so there is nothing to keep in sync.
    let mut registry = Registry::with_prefix("sluice");

    let build: Family<Labels, Gauge> = Family::default();
    build
        .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])
        .set(1);
    registry.register("build_info", "sluice's version (always 1)", build);

    registry.register(
        "apply_lag_seconds",
        "Replication lag samples: time from the source write (heartbeat, or commit second \
         without one) to its commit on the target",
        progress.lag.exported_histogram(),
    );
    registry.register(
        "rows_applied",
        "Row changes written to the target by the stream",
        ConstCounter::new(progress.rows_applied.load(Relaxed)),
    );
    registry.register(
        "source_transactions_applied",
        "Source transactions committed on the target",
        ConstCounter::new(progress.source_txns_applied.load(Relaxed)),
    );
    registry.register(
        "target_commits",
        "Target transactions committed by the stream writers",
        ConstCounter::new(progress.target_commits.load(Relaxed)),
    );

    let received: Family<Labels, Counter> = Family::default();
    let filtered: Family<Labels, Counter> = Family::default();
    for (table, counts) in progress.stream_rows.lock().expect("progress lock").iter() {
        let t = vec![("table", table.clone())];
        received.get_or_create(&t).inc_by(counts.received);
        filtered.get_or_create(&t).inc_by(counts.filtered);
    }
    registry.register(
        "stream_rows_received",
        "Row changes of a replicated table read from the binlog",
        received,
    );
    registry.register(
        "stream_rows_filtered",
        "Row changes of a replicated table the row filter kept from the target",
        filtered,
    );

    let copied: Family<Labels, Counter> = Family::default();
    let estimate: Family<Labels, Gauge> = Family::default();
    let state: Family<Labels, Gauge> = Family::default();
    for (table, copy) in progress.backfill.snapshot() {
        let t = || vec![("table", table.clone())];
        copied.get_or_create(&t()).inc_by(copy.rows_copied);
        estimate
            .get_or_create(&t())
            .set(i64::try_from(copy.rows_estimate).unwrap_or(i64::MAX));
        let current = copy_state_name(&copy.state);
        for s in COPY_STATES {
            state
                .get_or_create(&vec![("table", table.clone()), ("state", s.to_owned())])
                .set(i64::from(s == current));
        }
    }
    registry.register(
        "backfill_rows_copied",
        "Existing rows copied to the target per table (stored progress)",
        copied,
    );
    registry.register("backfill_rows_estimate", "Estimated rows to copy per table", estimate);
    registry.register(
        "backfill_table_state",
        "A table's copy state (1 for the current one)",
        state,
    );

    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// The error of a metrics listener that cannot start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr} ([metrics] listen): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr` (an error names it) and serves `/metrics`, `/status` and the status page from
/// `live` until the returned guard is dropped.
pub async fn serve(addr: SocketAddr, live: Arc<LiveStatus>) -> Result<AbortOnDrop, BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(%local, "serving Prometheus metrics on /metrics and the status page on http://{local}/");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(AbortOnDrop(tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on accepting.
                    tracing::debug!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // too many at once: dropped (closed) unanswered
            };
            let live = live.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &live).await {
                    tracing::debug!("metrics listener: {e}");
                }
                drop(slot);
            });
        }
    })))
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, live: &LiveStatus) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()), // too slow: closed unanswered
    };
    let (status, content_type, body) = match head {
        Some(head) => match route(&head, &live.progress) {
            Route::Status => ("200 OK", JSON, live.json().await),
            Route::Answer(status, content_type, body) => (status, content_type, body),
        },
        None => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request head too large\n".to_owned(),
        ),
    };
    let mut response = String::with_capacity(body.len() + 128);
    // The page's own assets only: no inline script, no other origin.
    let _ = write!(
        response,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Content-Security-Policy: default-src 'self'\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The request head up to its blank line, or `None` when it exceeds [`MAX_REQUEST_HEAD`].
/// A client that closes early yields what it sent (answered 400 if incomplete).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(Some(head));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

const PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// What a request head asks for.
enum Route {
    /// `/status`: computed asynchronously (it reads the source and the target).
    Status,
    /// Status line, content type and body.
    Answer(&'static str, &'static str, String),
}

fn route(head: &[u8], progress: &Progress) -> Route {
    let bad = || Route::Answer("400 Bad Request", PLAIN, "bad request\n".to_owned());
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad();
    };
    if !version.starts_with("HTTP/1.") {
        return bad();
    }
    let path = target.split('?').next().unwrap_or_default();
    let page = |content_type, body: &str| Route::Answer("200 OK", content_type, body.to_owned());
    match (method, path) {
        ("GET", "/metrics") => Route::Answer("200 OK", prometheus_text::CONTENT_TYPE, render(progress)),
        ("GET", "/status") => Route::Status,
        ("GET", "/") => page("text/html; charset=utf-8", PAGE_HTML),
        ("GET", "/page.css") => page("text/css; charset=utf-8", PAGE_CSS),
        ("GET", "/page.js") => page("text/javascript; charset=utf-8", PAGE_JS),
        (_, "/metrics" | "/status" | "/" | "/page.css" | "/page.js") => {
            Route::Answer("405 Method Not Allowed", PLAIN, "use GET\n".to_owned())
        }
        _ => Route::Answer(
            "404 Not Found",
            PLAIN,
            "not found: try / (status page), /status or /metrics\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_types_and_no_total_suffix_twice() {
        let progress = Progress::default();
        progress.rows_applied.store(7, std::sync::atomic::Ordering::Relaxed);
        let page = render(&progress);
        assert!(page.contains("# TYPE sluice_apply_lag_seconds histogram"), "{page}");
        assert!(page.contains("sluice_apply_lag_seconds_bucket{le=\"60\"} 0"), "{page}");
        assert!(page.contains("# TYPE sluice_rows_applied_total counter"), "{page}");
        assert!(page.contains("\nsluice_rows_applied_total 7\n"), "{page}");
        assert!(page.contains("sluice_build_info{version=\""), "{page}");
        assert!(!page.contains("_total_total"), "{page}");
    }

    #[test]
    fn routes() {
        let p = Progress::default();
        let status = |head: &[u8]| match route(head, &p) {
            Route::Status => "status",
            Route::Answer(status, ..) => status,
        };
        assert!(status(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("200"));
        assert!(status(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("200"));
        assert_eq!(status(b"GET /status HTTP/1.1\r\n\r\n"), "status");
        assert!(status(b"GET / HTTP/1.1\r\n\r\n").starts_with("200"));
        assert!(status(b"GET /page.js HTTP/1.1\r\n\r\n").starts_with("200"));
        assert!(status(b"GET /other HTTP/1.1\r\n\r\n").starts_with("404"));
        assert!(status(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("405"));
        assert!(status(b"POST /status HTTP/1.1\r\n\r\n").starts_with("405"));
        for bad in [
            &b""[..],
            b"\xff\xfe\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
        ] {
            assert!(status(bad).starts_with("400"), "{bad:?}");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_assets_and_never_writes_html_from_data() {
        assert!(PAGE_HTML.contains("src=\"/page.js\"") && PAGE_HTML.contains("href=\"/page.css\""));
        for asset in [PAGE_HTML, PAGE_CSS, PAGE_JS] {
            // The SVG namespace is a name, not a request.
            let asset = asset.replace("\"http://www.w3.org/2000/svg\"", "");
            assert!(
                !asset.contains("http://") && !asset.contains("https://"),
                "no other origin"
            );
        }
        // Data goes into the DOM as text only.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE_JS.contains(sink), "{sink} in page.js");
        }
    }
}
