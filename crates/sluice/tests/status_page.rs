//! The status page in a real headless browser (Debian's `chromium` driven through
//! `chromedriver` with fantoccini): `sluice run` copies a table big enough (in small chunks)
//! for the copy to be seen in progress while the page refreshes itself. The page must load
//! without errors (it records them in `window.sluiceErrors`: script errors, failed loads,
//! content-security-policy refusals), draw lag points, and show the table go from copying to
//! ready. Screenshots are kept in `target/test-output/`: `status_page_copying.png` during the
//! copy, `status_page.png` at the end.
//!
//! The browser is required, not optional: `scripts/lib/deps.sh` installs it when missing.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, grant_heartbeat, Env};
use fantoccini::{Client, ClientBuilder, Locator};

/// Rows copied in chunks of `CHUNK_ROWS`: several seconds of copying here (about 9,000 rows/s
/// on a 2-core machine), so that the page shows the copy in progress.
const ROWS: u32 = 80_000;
const CHUNK_ROWS: u32 = 20;

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(port: u16) -> Driver {
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver not found: install Debian's chromium and chromium-driver (scripts/lib/deps.sh does)");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn browser(driver_port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": [
                "--headless=new",
                // Tests may run as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a chromium session through chromedriver")
}

/// The `data-state` of table `table`'s state cell, when the page shows the table.
async fn table_state(client: &Client, table: &str) -> Option<String> {
    attribute(
        client,
        &format!("#tables tr[data-table='{table}'] td.state"),
        "data-state",
    )
    .await
}

/// Reads in one script turn, so the page's own refresh (which rebuilds the rows) can never
/// leave the test holding a stale element.
async fn attribute(client: &Client, css: &str, name: &str) -> Option<String> {
    let value = client
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null",
            vec![serde_json::json!(css), serde_json::json!(name)],
        )
        .await
        .ok()?;
    value.as_str().map(str::to_owned)
}

async fn text(client: &Client, css: &str) -> Option<String> {
    let value = client
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null",
            vec![serde_json::json!(css)],
        )
        .await
        .ok()?;
    value.as_str().map(str::to_owned)
}

async fn page_errors(client: &Client) -> Vec<serde_json::Value> {
    let errors = client
        .execute(
            "return window.sluiceErrors === undefined ? ['page.js never ran'] : window.sluiceErrors",
            vec![],
        )
        .await
        .expect("read window.sluiceErrors");
    errors.as_array().cloned().unwrap_or_default()
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `secs` with `what`.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    env: &Env,
    sluice: &mut common::Sluice,
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        if let Some(status) = sluice.try_exit() {
            panic!("sluice exited ({status}); log:\n{}", env.log());
        }
        assert!(Instant::now() < deadline, "{what} never showed; log:\n{}", env.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("create target/test-output");
    dir
}

/// Saves what the browser shows as `target/test-output/<name>`.
async fn save_screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(output_dir().join(name), png).expect("save the screenshot");
}

#[test]
fn the_status_page_shows_a_copy_finish_and_the_lag() {
    let port = free_port();
    let setup = format!(
        "CREATE DATABASE shop;
         CREATE TABLE shop.big (id INT PRIMARY KEY, name VARCHAR(40));
         INSERT INTO shop.big SELECT seq, CONCAT('row ', seq) FROM shop.seq_1_to_{ROWS};"
    );
    let tables = format!(
        "[[tables]]\nmatch = \"shop.*\"\n\n[backfill]\nchunk_rows = {CHUNK_ROWS}\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let env = Env::new(&setup, &tables);
    grant_heartbeat(&env);
    let driver_port = free_port();
    let _driver = start_driver(driver_port);
    let mut sluice = env.start();
    let profile = env.dir.path().join("chromium-profile");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = browser(driver_port, &profile).await;
        // Refreshing every 250 ms (the live status changes at most once a second), the page
        // cannot miss a copy that lasts a few seconds even on a fast machine.
        client
            .goto(&format!("http://127.0.0.1:{port}/?refresh_ms=250"))
            .await
            .expect("load the page");

        // The state and the progress cell from one look at the page.
        let progress = wait_for(&env, &mut sluice, 60, "the copy in progress", || async {
            let state = table_state(&client, "big").await?;
            let progress = text(&client, "#tables tr[data-table='big'] td:nth-child(5)").await?;
            (state == "copying").then_some(progress)
        })
        .await;
        assert!(
            progress.contains(" of ~") && progress.ends_with("source rows"),
            "{progress}"
        );
        save_screenshot(&client, "status_page_copying.png").await;

        wait_for(&env, &mut sluice, 180, "the finished copy", || async {
            (table_state(&client, "big").await? == "ready").then_some(())
        })
        .await;
        let points = wait_for(&env, &mut sluice, 60, "lag points in the chart", || async {
            let points = client.find_all(Locator::Css("#lag-chart circle.p99")).await.ok()?.len();
            (points >= 2).then_some(points)
        })
        .await;
        assert!(points >= 2);

        assert_eq!(text(&client, "#liveness").await.as_deref(), Some("running"));
        assert_eq!(text(&client, "#source-state").await.as_deref(), Some("yes"));
        let updates = client
            .execute("return Number(document.body.dataset.updates || 0)", vec![])
            .await
            .unwrap();
        assert!(
            updates.as_u64().unwrap_or(0) >= 2,
            "the page refreshed itself: {updates}"
        );
        let errors = page_errors(&client).await;
        assert!(errors.is_empty(), "errors on the page: {errors:?}");

        save_screenshot(&client, "status_page.png").await;
        client.close().await.expect("close the browser");
    });
    assert!(sluice.stop().success());
}
