//! `wasi:io/poll` and `wasi:io/streams` for plugins without tokio. wasmtime-wasi's synchronous
//! bindings run each blocking call (`blocking-write-and-flush`, `poll`, dropping a stream…)
//! through `Handle::block_on`, which panics on a tokio worker thread, and policies are called
//! straight from a request's task (server/front.rs). A plugin's streams never wait here: its
//! stdout and stderr are in-memory tails (wasi.rs), its stdin is empty, and sockets and timers
//! are refused. So each call's future is polled once, with no runtime, and a future that is
//! not ready at once traps, naming the call, instead of blocking a thread.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi_io::bindings::wasi::io::{poll as apoll, streams as astreams};
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, StreamError, StreamResult};

use super::store::StoreState;

/// A store's resource table, seen through the synchronous `wasi:io` traits.
pub(crate) struct Io<'a>(&'a mut ResourceTable);

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = Io<'a>;
}

/// Replaces wasmtime-wasi's `wasi:io/poll` and `wasi:io/streams` in `linker` (after
/// `add_to_linker_sync`, with shadowing allowed).
pub(crate) fn shadow(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    poll::add_to_linker::<StoreState, HasIo>(linker, |s| Io(&mut s.table))?;
    streams::add_to_linker::<StoreState, HasIo>(linker, |s| Io(&mut s.table))?;
    Ok(())
}

/// The value of `f` if it is ready at its first poll; else a trap naming `call`.
fn at_once<T>(call: &str, f: impl Future<Output = T>) -> wasmtime::Result<T> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => wasmtime::bail!("wasi:io {call} would block; plugins' streams never wait"),
    }
}

/// `at_once` for a call that answers a stream result: not ready is a trap too.
fn stream_at_once<T>(call: &str, f: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
    at_once(call, f).map_err(StreamError::Trap)?
}

impl poll::Host for Io<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        at_once("poll", apoll::Host::poll(self.0, pollables))?
    }
}

impl poll::HostPollable for Io<'_> {
    fn ready(&mut self, p: Resource<DynPollable>) -> wasmtime::Result<bool> {
        at_once("pollable.ready", apoll::HostPollable::ready(self.0, p))?
    }

    fn block(&mut self, p: Resource<DynPollable>) -> wasmtime::Result<()> {
        at_once("pollable.block", apoll::HostPollable::block(self.0, p))?
    }

    fn drop(&mut self, p: Resource<DynPollable>) -> wasmtime::Result<()> {
        apoll::HostPollable::drop(self.0, p)
    }
}

impl streams::Host for Io<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(match astreams::Host::convert_stream_error(self.0, err)? {
            astreams::StreamError::LastOperationFailed(e) => streams::StreamError::LastOperationFailed(e),
            astreams::StreamError::Closed => streams::StreamError::Closed,
        })
    }
}

impl streams::HostOutputStream for Io<'_> {
    fn drop(&mut self, s: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        at_once("drop output-stream", astreams::HostOutputStream::drop(self.0, s))?
    }

    fn check_write(&mut self, s: Resource<DynOutputStream>) -> StreamResult<u64> {
        astreams::HostOutputStream::check_write(self.0, s)
    }

    fn write(&mut self, s: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        astreams::HostOutputStream::write(self.0, s, bytes)
    }

    fn blocking_write_and_flush(&mut self, s: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        stream_at_once(
            "blocking-write-and-flush",
            astreams::HostOutputStream::blocking_write_and_flush(self.0, s, bytes),
        )
    }

    fn blocking_write_zeroes_and_flush(&mut self, s: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        let f = astreams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, s, len);
        stream_at_once("blocking-write-zeroes-and-flush", f)
    }

    fn subscribe(&mut self, s: Resource<DynOutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        astreams::HostOutputStream::subscribe(self.0, s)
    }

    fn write_zeroes(&mut self, s: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        astreams::HostOutputStream::write_zeroes(self.0, s, len)
    }

    fn flush(&mut self, s: Resource<DynOutputStream>) -> StreamResult<()> {
        astreams::HostOutputStream::flush(self.0, s)
    }

    fn blocking_flush(&mut self, s: Resource<DynOutputStream>) -> StreamResult<()> {
        stream_at_once("blocking-flush", astreams::HostOutputStream::blocking_flush(self.0, s))
    }

    fn splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        astreams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_at_once("blocking-splice", astreams::HostOutputStream::blocking_splice(self.0, dst, src, len))
    }
}

impl streams::HostInputStream for Io<'_> {
    fn drop(&mut self, s: Resource<DynInputStream>) -> wasmtime::Result<()> {
        at_once("drop input-stream", astreams::HostInputStream::drop(self.0, s))?
    }

    fn read(&mut self, s: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        astreams::HostInputStream::read(self.0, s, len)
    }

    fn blocking_read(&mut self, s: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        stream_at_once("blocking-read", astreams::HostInputStream::blocking_read(self.0, s, len))
    }

    fn skip(&mut self, s: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        astreams::HostInputStream::skip(self.0, s, len)
    }

    fn blocking_skip(&mut self, s: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        stream_at_once("blocking-skip", astreams::HostInputStream::blocking_skip(self.0, s, len))
    }

    fn subscribe(&mut self, s: Resource<DynInputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        astreams::HostInputStream::subscribe(self.0, s)
    }
}
