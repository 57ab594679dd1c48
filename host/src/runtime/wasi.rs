//! WASI 0.2 for components that import it (Python and JavaScript guests need it to start): a
//! context with no capability. No preopened directory (opening a file fails with an error the
//! guest sees), no environment, no arguments, an empty stdin; stdout and stderr go to a bounded
//! per-instance buffer that the host reads after a failed call (a Python traceback); clocks
//! and random numbers. Sockets and timers are refused outright (a call traps, naming what was
//! called): a socket is ambient network access, and a timer would block a host thread where
//! the epoch deadline cannot reach it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime::component::Linker;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use super::store::StoreState;

/// What a guest may print per instance between two reads; older bytes are dropped first.
pub(crate) const OUTPUT_TAIL: usize = 4096;

/// The WASI 0.2 release wasmtime-wasi defines; a guest's older 0.2 imports resolve to it.
const WASI_P2: &str = "0.2.12";

/// The calls refused even though wasmtime-wasi implements them: every way to get a socket or a
/// network handle (no method of one is reachable without it), and the clock subscriptions that
/// back `sleep`.
const REFUSED: &[(&str, &str)] = &[
    ("wasi:sockets/instance-network", "instance-network"),
    ("wasi:sockets/tcp-create-socket", "create-tcp-socket"),
    ("wasi:sockets/udp-create-socket", "create-udp-socket"),
    ("wasi:sockets/ip-name-lookup", "resolve-addresses"),
    ("wasi:clocks/monotonic-clock", "subscribe-duration"),
    ("wasi:clocks/monotonic-clock", "subscribe-instant"),
];

/// Adds WASI 0.2 to the linker, then replaces the refused calls with ones that trap naming
/// themselves.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    for (iface, func) in REFUSED {
        let full = format!("{iface}#{func}");
        linker.instance(&format!("{iface}@{WASI_P2}"))?.func_new(func, move |_, _, _, _| {
            wasmtime::bail!("{full} is not available to plugins (no network, no timers)")
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Whether wasmtime-wasi's linker defines this import (a `wasi:` 0.2 interface).
pub(crate) fn provided(import: &str) -> bool {
    ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/"]
        .iter()
        .any(|p| import.starts_with(p))
        && import.contains("@0.2.")
}

/// A guest's stdout and stderr, shared by both streams: the last `OUTPUT_TAIL` bytes and a
/// count of those dropped before them. Writes never fail, so printing cannot kill a guest.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Tail>>);

#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    dropped: u64,
}

impl Captured {
    fn push(&self, data: &[u8]) {
        let mut t = self.0.lock();
        let data = if data.len() > OUTPUT_TAIL {
            t.dropped += (data.len() - OUTPUT_TAIL) as u64;
            &data[data.len() - OUTPUT_TAIL..]
        } else {
            data
        };
        let over = (t.bytes.len() + data.len()).saturating_sub(OUTPUT_TAIL);
        t.bytes.drain(..over);
        t.dropped += over as u64;
        t.bytes.extend(data);
    }

    /// The end of what was printed since the last take, on one line (control characters
    /// shown as spaces, at most `chars` characters): for an error message or a log field.
    pub fn take_line(&self, chars: usize) -> String {
        let text: String = self.take().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let n = text.chars().count();
        if n <= chars {
            return text;
        }
        let tail: String = text.chars().skip(n - chars).collect();
        format!("…{tail}")
    }

    /// What was printed since the last take (lossy UTF-8, trimmed), empty when nothing was.
    pub fn take(&self) -> String {
        let mut t = self.0.lock();
        if t.bytes.is_empty() {
            return String::new();
        }
        let (a, b) = t.bytes.as_slices();
        let mut text = String::from_utf8_lossy(&[a, b].concat()).trim().to_string();
        if t.dropped > 0 {
            text = format!("[{} earlier bytes dropped] {text}", t.dropped);
        }
        t.bytes.clear();
        t.dropped = 0;
        text
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(OUTPUT_TAIL)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A context with nothing ambient: stdout and stderr into `out`, everything else the builder's
/// empty default (no preopens, no environment, no arguments, no network lookups).
pub(crate) fn context(out: &Captured) -> WasiCtx {
    // random bytes are made on the host, outside the guest's memory cap: 64 KiB a call at most
    WasiCtxBuilder::new().stdout(out.clone()).stderr(out.clone()).max_random_size(64 << 10).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_bytes_and_counts_the_rest() {
        let c = Captured::default();
        assert_eq!(c.take(), "");
        c.push(b"hello\n");
        assert_eq!(c.take(), "hello");
        c.push(&vec![b'a'; OUTPUT_TAIL]);
        c.push(b"END");
        let t = c.take();
        assert!(t.starts_with("[3 earlier bytes dropped]"), "{t}");
        assert!(t.ends_with("aEND"));
        c.push(&vec![b'b'; OUTPUT_TAIL * 2]);
        assert!(c.take().starts_with(&format!("[{OUTPUT_TAIL} earlier bytes dropped]")));
        c.push(b"one\n\x1b[31mtwo\tthree");
        assert_eq!(c.take_line(100), "one  [31mtwo three");
        c.push(b"0123456789");
        assert_eq!(c.take_line(4), "…6789");
    }

    #[test]
    fn wasi_0_2_is_provided_and_nothing_else() {
        assert!(provided("wasi:cli/environment@0.2.9"));
        assert!(!provided("wasi:cli/environment@0.3.0"));
        assert!(!provided("wasi:http/types@0.2.0"));
    }
}
