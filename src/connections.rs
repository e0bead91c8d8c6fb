//! The listener's guard on connections, below HTTP/2: a server-wide cap and a cap per client
//! address (past either, a new connection is closed at once; the second keeps one client from
//! taking every slot, health probes' included), a deadline for a new connection to start speaking, and,
//! when set, the closing of connections that carry no call for a while.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The bytes of the HTTP/2 client preface (`PRI * HTTP/2.0...`), which a client sends first.
const PREFACE_BYTES: usize = 24;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max: usize,
    /// Connections open at once from one client address.
    pub per_address: usize,
    /// How long a new connection has to send its first bytes (the HTTP/2 preface, or the
    /// TLS handshake that comes before it).
    pub handshake: Duration,
    /// How long a connection may carry no call before it is closed; `None`: forever.
    pub idle: Option<Duration>,
}

/// Connections refused because the cap was reached, since start.
#[derive(Debug, Default)]
pub struct Refused(AtomicU64);

impl Refused {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Connections open per client address.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One of an address's places, given back when its connection closes.
struct AddressPlace {
    counts: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, address: IpAddr, cap: usize) -> Option<AddressPlace> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let open = counts.entry(address).or_insert(0);
        if *open >= cap {
            return None;
        }
        *open += 1;
        Some(AddressPlace {
            counts: self.clone(),
            address,
        })
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = counts.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Accepted connections, each holding one of `limits.max` places, and one of its address's
/// `limits.per_address`, until it closes.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    refused: Arc<Refused>,
) -> impl Stream<Item = io::Result<Guarded>> {
    let places = Arc::new(Semaphore::new(limits.max));
    let per_address = Arc::new(PerAddress::default());
    TcpListenerStream::new(listener).filter_map(move |accepted| {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(err) => return Some(Err(err)),
        };
        let address = match stream.peer_addr() {
            Ok(peer) => peer.ip(),
            Err(err) => return Some(Err(err)),
        };
        let Some(address_place) = per_address.take(address, limits.per_address) else {
            refused.0.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%address, "refused a connection: its address holds its limit");
            return None;
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            refused.0.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("refused a connection: the server holds its limit");
            return None;
        };
        let _ = stream.set_nodelay(true);
        Some(Ok(Guarded::new(stream, (place, address_place), limits)))
    })
}

/// What the calls on one connection tell its guard: how many are open, and since when none.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// The connection's reader, woken when its last call ends so it can start the idle clock.
    reader: Mutex<Option<Waker>>,
}

/// One call on a connection; the connection counts as busy until it is dropped.
pub struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            reader: Mutex::new(None),
        }
    }

    pub fn begin(self: &Arc<Self>) -> Busy {
        self.open.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Since when the connection has carried no call, if it carries none now.
    fn idle_since(&self) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        // The waker stays, so the reader need not store it again.
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(reader) = &*self.0.reader.lock().unwrap_or_else(|p| p.into_inner())
        {
            reader.wake_by_ref();
        }
    }
}

/// What a call knows of its connection: the TCP addresses, and the activity count.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    pub activity: Arc<Activity>,
}

/// A TCP connection under the guard's rules.
pub struct Guarded {
    inner: TcpStream,
    _places: (OwnedSemaphorePermit, AddressPlace),
    info: ConnectionInfo,
    /// Bytes still to come before the client counts as speaking.
    preface_left: usize,
    idle: Option<Duration>,
    /// The handshake deadline, then the idle deadline.
    timer: Pin<Box<Sleep>>,
    /// The timer is set for an idle deadline and holds the connection's waker.
    idle_armed: bool,
}

impl Guarded {
    fn new(
        inner: TcpStream,
        places: (OwnedSemaphorePermit, AddressPlace),
        limits: ConnectionLimits,
    ) -> Self {
        let tcp = TcpConnectInfo {
            local_addr: inner.local_addr().ok(),
            remote_addr: inner.peer_addr().ok(),
        };
        Self {
            inner,
            _places: places,
            info: ConnectionInfo {
                tcp,
                activity: Arc::new(Activity::new()),
            },
            preface_left: PREFACE_BYTES,
            idle: limits.idle,
            timer: Box::pin(tokio::time::sleep(limits.handshake)),
            idle_armed: false,
        }
    }

    /// An error when the connection's time is up: it never spoke, or it stayed idle.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.preface_left > 0 {
            return self.timer.as_mut().poll(cx).is_ready().then(|| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not start speaking in time",
                )
            });
        }
        let idle = self.idle?;
        let same_task = {
            // The connection's task is almost always the same one: its waker is kept as it is.
            let mut reader = self
                .info
                .activity
                .reader
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let same = reader
                .as_ref()
                .is_some_and(|kept| kept.will_wake(cx.waker()));
            if !same {
                *reader = Some(cx.waker().clone());
            }
            same
        };
        let since = self.info.activity.idle_since()?;
        // An armed timer wakes this task at its deadline, which is never past the idle
        // deadline (each idle spell starts later than the last): it is moved then, once per
        // idle period, rather than at every idle spell (a reset showed in the profile of every
        // call on a busy connection).
        if self.idle_armed && same_task && !self.timer.is_elapsed() {
            return None;
        }
        if self.timer.deadline() != since + idle {
            self.timer.as_mut().reset(since + idle);
        }
        let fired = self.timer.as_mut().poll(cx).is_ready();
        self.idle_armed = !fired;
        fired.then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection carried no call for too long",
            )
        })
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.info.tcp.remote_addr
    }
}

impl Connected for Guarded {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                self.preface_left = self.preface_left.saturating_sub(read);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => match self.expired(cx) {
                Some(err) => Poll::Ready(Err(err)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
