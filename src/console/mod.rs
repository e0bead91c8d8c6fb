//! The admin console at `/console/`: a page, its script and its style, built into the binary,
//! served with a Content-Security-Policy that lets the page load nothing but these and call
//! nothing but this server. The page calls the service through Connect, as any client.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use tonic::body::Body;

/// Where the console is served.
pub const PREFIX: &str = "/console";

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// Everything the page needs is served from here; it may call only this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
     base-uri 'none'";

#[derive(Debug, Clone, Copy)]
pub struct Console {
    /// The server's signing keys are sealed under a generated development key: the page says so.
    pub development_key: bool,
}

impl Console {
    /// Whether a request is the console's to answer.
    pub fn serves(path: &str) -> bool {
        path.strip_prefix(PREFIX)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The answer to a request for `path` (one `serves` accepts).
    pub fn answer(&self, method: &Method, path: &str) -> http::Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "the console is read with GET\n",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let rest = &path[PREFIX.len()..];
        let (content_type, content): (&str, Bytes) = match rest {
            "" => return redirect("/console/"),
            "/" | "/index.html" => (
                "text/html; charset=utf-8",
                Bytes::from_static(INDEX.as_bytes()),
            ),
            "/app.js" => (
                "text/javascript; charset=utf-8",
                Bytes::from_static(SCRIPT.as_bytes()),
            ),
            "/app.css" => (
                "text/css; charset=utf-8",
                Bytes::from_static(STYLE.as_bytes()),
            ),
            "/server.json" => (
                "application/json",
                Bytes::from(format!(r#"{{"developmentKey":{}}}"#, self.development_key)),
            ),
            _ => return plain(StatusCode::NOT_FOUND, "no such page in the console\n"),
        };
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::new(http_body_util::Full::new(content))
        };
        let mut response = http::Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        // The files change with the binary: always ask again.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        secure(headers);
        response
    }
}

/// A redirect to the console, for `/` and `/console`.
pub fn redirect(to: &'static str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

/// A short text answer.
pub fn plain(status: StatusCode, text: &'static str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(
        Bytes::from_static(text.as_bytes()),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn secure(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_serves_its_own_prefix_only() {
        for path in ["/console", "/console/", "/console/app.js"] {
            assert!(Console::serves(path), "{path}");
        }
        for path in ["/", "/consoles", "/userservice.UserService/GetUser"] {
            assert!(!Console::serves(path), "{path}");
        }
    }

    #[test]
    fn every_page_carries_the_content_security_policy() {
        let console = Console {
            development_key: false,
        };
        for path in [
            "/console/",
            "/console/app.js",
            "/console/app.css",
            "/console/server.json",
        ] {
            let response = console.answer(&Method::GET, path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                response.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY,
                "{path}"
            );
        }
        assert_eq!(
            console.answer(&Method::GET, "/console/missing").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            console.answer(&Method::POST, "/console/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
