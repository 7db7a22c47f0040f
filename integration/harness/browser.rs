//! A real headless browser: Debian's `chromium` driven through
//! `chromedriver` (WebDriver) with fantoccini. chromedriver listens on a
//! loopback port chosen at run time; Chromium gets a fresh profile in a temp
//! dir, no proxy, and cannot download anything. Dropping a `Browser` stops
//! Chromium and chromedriver by their PIDs.

use super::{Daemon, free_port, loopback, scrub_env};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const CHROMEDRIVER: &str = "chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Where screenshots go (test artifacts): `<target>/tmp/ui-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

pub struct Browser {
    pub client: Client,
    // Field order is drop order: the profile dir goes after the processes.
    driver: Daemon,
    profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1280x900).
    pub async fn start() -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("it-chromium-")
            .tempdir()
            .expect("temp dir");
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(CHROMEDRIVER);
            cmd.arg(format!("--port={port}"))
                .env("HOME", profile.path());
            scrub_env(&mut cmd);
            let mut driver = Daemon::spawn(
                "chromedriver",
                cmd,
                &profile.path().join("chromedriver.log"),
            );
            let url = format!("http://{}", loopback(port));
            if let Err(e) = driver
                .wait_ready(&format!("{url}/status"), Duration::from_secs(15))
                .await
            {
                last_error = e;
                continue;
            }
            let caps = json!({
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--disable-breakpad",
                        "--disable-crash-reporter",
                        "--disable-dev-shm-usage",
                        "--no-proxy-server",
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().join("profile").display()),
                    ],
                },
            });
            let Value::Object(caps) = caps else {
                unreachable!()
            };
            let client = ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await;
            match client {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        profile,
                    };
                }
                Err(e) => last_error = format!("{e}\n{}", driver.log()),
            }
        }
        panic!("chromium did not start: {last_error}");
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .to_string()
    }

    /// The text of the first element matching `css` (panics if none).
    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        el.text().await.expect("element text")
    }

    /// The texts of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for el in self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
        {
            out.push(el.text().await.expect("element text"));
        }
        out
    }

    /// Attribute `attr` of every element matching `css`.
    pub async fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let mut out = Vec::new();
        for el in self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
        {
            out.push(el.attr(attr).await.expect("attr").unwrap_or_default());
        }
        out
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .is_empty()
    }

    /// The first element matching `css`, waiting up to 15 s for it to
    /// appear (a page still loading, or a script still filling it in).
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| {
                panic!("no element {css}: {e}");
            })
    }

    /// Clicks what does not load another page (a button that opens a
    /// dialog, a script's control). For links and form buttons use
    /// [`Self::click_to_page`].
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks a link or a form's submit button and waits for what that
    /// produces: a new document, loaded. The URL alone does not tell: a
    /// form that answers on its own URL (a failed login) leaves it as it
    /// was, and would be "there" before the POST's answer arrived.
    pub async fn click_to_page(&self, css: &str) {
        // A mark on the current document: gone once another replaced it.
        self.js("window.__itOldPage = true;", vec![]).await;
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // Scripts may fail while the navigation is in flight: not yet.
            let loaded = self
                .client
                .execute(
                    "return window.__itOldPage !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if matches!(loaded, Ok(Value::Bool(true))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new page after clicking {css} (still at {})",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(value).await.expect("send_keys");
    }

    /// Waits until the page's URL satisfies `f` (after a redirect that a
    /// script or the server makes; after a click, [`Self::click_to_page`]
    /// first).
    pub async fn wait_url(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = self.url().await;
            if f(&url) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "still at {url}, waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Like [`Self::js`] for a script that calls `arguments[arguments.length - 1](value)`.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    /// The value of cookie `name` as the browser holds it (HttpOnly included).
    pub async fn cookie(&self, name: &str) -> Option<String> {
        self.client
            .get_all_cookies()
            .await
            .expect("cookies")
            .into_iter()
            .find(|c| c.name() == name)
            .map(|c| c.value().to_string())
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("set window size");
    }

    /// Makes pages see `prefers-color-scheme: dark` (or light again), through
    /// chromedriver's DevTools passthrough.
    pub async fn dark(&self, on: bool) {
        let value = if on { "dark" } else { "light" };
        self.client
            .issue_cmd(Cdp {
                cmd: "Emulation.setEmulatedMedia",
                params: json!({"features": [{"name": "prefers-color-scheme", "value": value}]}),
            })
            .await
            .expect("emulate color scheme");
    }

    /// Saves a PNG of the viewport as `<screenshot_dir>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("mkdir screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the WebDriver session (chromedriver quits Chromium).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// A Chrome DevTools command (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &reqwest::Url,
        session: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or("")
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium and its helpers are chromedriver's descendants: stop them
        // by PID before the driver itself goes (the Daemon's drop).
        for pid in descendants(self.driver.pid()).into_iter().rev() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        let _ = &self.profile;
    }
}

/// The PIDs of every descendant of `root`, parents before children.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parens.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}
