//! Innermost layer: a global cap on calls being handled at once. Past it, a call gets
//! UNAVAILABLE at once instead of queueing without bound. A streaming call holds its slot only
//! until its response starts, so long-lived watches do not use the cap up.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::Status;
use tower::{Layer, Service, ServiceExt};

use super::{BoxFuture, Response, is_infrastructure, refusal_response};

#[derive(Clone)]
pub struct LoadShedLayer {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl LoadShedLayer {
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    layer: LoadShedLayer,
}

impl<S, B> Service<http::Request<B>> for LoadShed<S>
where
    S: Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        if is_infrastructure(request.uri().path()) {
            return Box::pin(inner.oneshot(request));
        }
        let Ok(slot) = self.layer.slots.clone().try_acquire_owned() else {
            let status = Status::unavailable(format!(
                "the server is handling its limit of {}; retry with backoff",
                crate::text::count(self.layer.limit as u64, "call", "calls")
            ));
            return Box::pin(std::future::ready(Ok(refusal_response(
                status,
                "load_shed",
            ))));
        };
        Box::pin(async move {
            let response = inner.oneshot(request).await;
            drop(slot);
            response
        })
    }
}
