//! Outermost layer: works out once who a call comes from (the peer, or the client a trusted
//! proxy names) and starts the call's state with it (`call::CallState`), which every limit
//! and handler reads.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::call::CallState;
use crate::client_address::ClientAddress;

#[derive(Clone)]
pub struct ClientAddressLayer {
    trusted_proxies: Arc<[IpAddr]>,
}

impl ClientAddressLayer {
    /// Believes forwarding headers only from `trusted_proxies`.
    pub fn new(trusted_proxies: &[IpAddr]) -> Self {
        Self {
            trusted_proxies: trusted_proxies.into(),
        }
    }
}

impl<S> Layer<S> for ClientAddressLayer {
    type Service = ResolveClientAddress<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResolveClientAddress {
            inner,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ResolveClientAddress<S> {
    inner: S,
    trusted_proxies: Arc<[IpAddr]>,
}

impl<S, B> Service<http::Request<B>> for ResolveClientAddress<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let address = ClientAddress::resolve(
            request.extensions(),
            request.headers(),
            &self.trusted_proxies,
        );
        request
            .extensions_mut()
            .insert(Arc::new(CallState::new(address)));
        self.inner.call(request)
    }
}
