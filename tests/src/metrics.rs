//! Scraping a daemon's `/metrics` as Prometheus does: a plain HTTP request over TCP, the text
//! exposition format read back, series looked up by name and labels.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Daemon;

/// The largest scrape read (the daemon's output is a few tens of KiB).
const MAX_SCRAPE_BYTES: u64 = 16 << 20;

/// The `[metrics]` table that makes a daemon serve on a free loopback port.
pub const CONFIG: &str = "[metrics]\naddress = \"127.0.0.1:0\"\n";

/// The address the daemon's current run serves metrics on (from its start-up log line).
pub fn address(d: &Daemon) -> Result<SocketAddr> {
    let log = d.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("metrics endpoint listening"))
        .context("the daemon logged no metrics address")?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .with_context(|| format!("no addr= in {line:?}"))?;
    Ok(addr.parse()?)
}

/// One HTTP/1.0 request for `path`: the status code and the body.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    tcp.take(MAX_SCRAPE_BYTES).read_to_end(&mut raw)?;
    let text = String::from_utf8(raw)?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP head in {text:?}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The daemon's metrics now. Panics unless the scrape answers 200.
pub fn scrape(d: &Daemon) -> Scrape {
    let addr = address(d).unwrap();
    let (status, body) = get(addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    Scrape(body)
}

/// One scrape's text.
#[derive(Debug, Clone)]
pub struct Scrape(pub String);

impl Scrape {
    /// The value of the series written exactly `series` (`name` or `name{a="x",b="y"}`).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// [`Scrape::get`], 0 when the series is absent (a counter family not yet incremented).
    pub fn or_zero(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// [`Scrape::get`]; panics with the whole scrape when the series is absent.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no {series} in the scrape:\n{}", self.0))
    }
}
