//! Second layer: when idle connections are closed (`enabled`), marks the call's connection
//! busy until the call's answer ends, so the connection guard knows when it carries none.
//! Otherwise it costs a flag test.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use crate::connections::{Busy, ConnectionInfo};
use tonic::transport::server::TlsConnectInfo;

#[derive(Clone, Copy, Default)]
pub struct ActivityLayer {
    pub enabled: bool,
}

impl<S> Layer<S> for ActivityLayer {
    type Service = TrackActivity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackActivity {
            inner,
            enabled: self.enabled,
        }
    }
}

#[derive(Clone)]
pub struct TrackActivity<S> {
    inner: S,
    enabled: bool,
}

fn busy(extensions: &http::Extensions) -> Option<Busy> {
    let info = extensions.get::<ConnectionInfo>().or_else(|| {
        extensions
            .get::<TlsConnectInfo<ConnectionInfo>>()
            .map(TlsConnectInfo::get_ref)
    })?;
    Some(info.activity.begin())
}

impl<S, B, ResBody> Service<http::Request<B>> for TrackActivity<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<BusyBody<ResBody>>;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let busy = if self.enabled {
            busy(request.extensions())
        } else {
            None
        };
        Tracked {
            inner: self.inner.call(request),
            busy,
        }
    }
}

pin_project_lite::pin_project! {
    /// The call's answer, whose body will keep the connection busy.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F, ResBody, E> Future for Tracked<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<BusyBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let busy = this.busy.take();
        Poll::Ready(Ok(response.map(|inner| BusyBody { inner, _busy: busy })))
    }
}

/// The answer's body, keeping its connection busy until it is done.
pub struct BusyBody<B> {
    inner: B,
    _busy: Option<Busy>,
}

impl<B: Body + Unpin> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
