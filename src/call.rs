//! One call's state, as one request extension every layer and handler reads: the client's
//! address (resolved by the outermost layer), what authentication found (left by the auth
//! layer), the protocol it came in (gRPC, gRPC-Web or Connect), whether the client went away,
//! and the code the answer ended with. One extension
//! rather than one per fact: each more grew the request's extension map, which showed in the
//! profile of every call.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tonic::Code;

use crate::caller::{Authenticated, Caller};
use crate::client_address::{ClientAddress, address_key};

/// Where a request's messages are counted as they arrive (the gRPC metrics).
pub trait ReceivedMessages: Send + Sync {
    fn received(&self, messages: u64);
}

pub struct CallState {
    address: ClientAddress,
    protocol: AtomicU8,
    authenticated: OnceLock<Authenticated>,
    client_gone: AtomicBool,
    /// Where the metrics layer has the request's messages counted.
    received: Mutex<Option<Arc<dyn ReceivedMessages>>>,
    /// The code in the answer's headers (a trailers-only answer) and in its trailers, read
    /// by the innermost reporting layer and taken from here by the others: the reporting
    /// layers sit together, so they see the same answer.
    head_code: KeptCode,
    trailer_code: KeptCode,
}

impl CallState {
    /// The state of a call from `address`.
    pub fn new(address: ClientAddress) -> Self {
        Self {
            address,
            protocol: AtomicU8::new(Protocol::Grpc as u8),
            authenticated: OnceLock::new(),
            client_gone: AtomicBool::new(false),
            received: Mutex::new(None),
            head_code: KeptCode::default(),
            trailer_code: KeptCode::default(),
        }
    }

    /// The call's state, when the outermost layer set one.
    pub fn of(extensions: &http::Extensions) -> Option<&Arc<CallState>> {
        extensions.get::<Arc<CallState>>()
    }

    /// Where the protocol layer notes what the client speaks.
    pub fn set_protocol(&self, protocol: Protocol) {
        self.protocol.store(protocol as u8, Ordering::Relaxed);
    }

    pub fn protocol(&self) -> Protocol {
        Protocol::ALL
            .get(usize::from(self.protocol.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(Protocol::Grpc)
    }

    /// Where the auth layer leaves what it found.
    pub fn set_authenticated(&self, authenticated: Authenticated) {
        let _ = self.authenticated.set(authenticated);
    }

    pub fn authenticated(&self) -> Option<&Authenticated> {
        self.authenticated.get()
    }

    pub fn caller(&self) -> Option<&Caller> {
        self.authenticated()
            .map(|authenticated| &authenticated.caller)
    }

    /// Has the request's messages counted into `count` as they arrive.
    pub fn count_received(&self, count: Arc<dyn ReceivedMessages>) {
        locked(&self.received).get_or_insert(count);
    }

    /// Counts `messages` more received, when the metrics asked.
    pub fn received(&self, messages: impl FnOnce() -> u64) {
        if let Some(count) = &*locked(&self.received) {
            count.received(messages());
        }
    }

    pub fn mark_client_gone(&self) {
        self.client_gone.store(true, Ordering::Relaxed);
    }

    pub fn client_gone(&self) -> bool {
        self.client_gone.load(Ordering::Relaxed)
    }

    /// The code in `part` of the answer, read by `read` once per call.
    pub fn code(&self, part: AnswerPart, read: impl FnOnce() -> Option<Code>) -> Option<Code> {
        match part {
            AnswerPart::Head => self.head_code.get_or_read(read),
            AnswerPart::Trailers => self.trailer_code.get_or_read(read),
        }
    }
}

/// How a call reached the server. Every protocol is translated into gRPC at the edge, so
/// everything inside sees one kind of call; the access log records which it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Protocol {
    Grpc,
    GrpcWeb,
    GrpcWebText,
    ConnectJson,
    ConnectProto,
}

impl Protocol {
    /// In the order of their discriminants.
    const ALL: [Protocol; 5] = [
        Protocol::Grpc,
        Protocol::GrpcWeb,
        Protocol::GrpcWebText,
        Protocol::ConnectJson,
        Protocol::ConnectProto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::GrpcWebText => "grpc-web-text",
            Protocol::ConnectJson => "connect+json",
            Protocol::ConnectProto => "connect+proto",
        }
    }
}

/// Where an answer carries its code: in its headers (a trailers-only answer) or its trailers.
#[derive(Clone, Copy)]
pub enum AnswerPart {
    Head,
    Trailers,
}

/// A code read once: not yet read, read and absent, or read.
#[derive(Default)]
struct KeptCode(AtomicU8);

impl KeptCode {
    const UNREAD: u8 = 0;
    const ABSENT: u8 = 1;
    /// Codes are kept past the two markers (gRPC's are 0-16).
    const FIRST: u8 = 2;

    fn get_or_read(&self, read: impl FnOnce() -> Option<Code>) -> Option<Code> {
        match self.0.load(Ordering::Relaxed) {
            Self::UNREAD => {
                let code = read();
                let kept = code.map_or(Self::ABSENT, |code| Self::FIRST + code as u8);
                self.0.store(kept, Ordering::Relaxed);
                code
            }
            Self::ABSENT => None,
            kept => Some(Code::from_i32(i32::from(kept - Self::FIRST))),
        }
    }
}

fn locked<T: ?Sized>(slot: &Mutex<T>) -> MutexGuard<'_, T> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientAddress {
    /// The client's IP as the outermost layer resolved it for this call.
    pub fn of(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
        CallState::of(extensions).and_then(|state| state.address.ip)
    }

    /// The TCP peer of this call, as the outermost layer found it.
    pub fn peer_of(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
        CallState::of(extensions).and_then(|state| state.address.peer)
    }

    /// The key per-address limits count this call's client under.
    pub fn key_of(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
        Self::of(extensions).map(address_key)
    }
}

impl Authenticated {
    /// What authentication left on a call; `None` when it has not passed the auth middleware.
    pub fn of(extensions: &http::Extensions) -> Option<&Self> {
        CallState::of(extensions).and_then(|state| state.authenticated())
    }

    /// The caller authentication left on a call; anonymous when there is none.
    pub fn caller_of(extensions: &http::Extensions) -> &Caller {
        static ANONYMOUS: Caller = Caller::Anonymous;
        Self::of(extensions).map_or(&ANONYMOUS, |authenticated| &authenticated.caller)
    }
}
