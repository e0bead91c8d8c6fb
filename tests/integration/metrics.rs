//! Prometheus metrics: scraped from the real server after known calls, parsed with a real
//! exposition parser, exact counts per method and code.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use user_service::pb::GetUserRequest;

use user_service::domain::Role;

use crate::helpers::{TestApp, create, new_user};
use crate::watch::next_event;

/// GETs `path` from `addr`: the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let answer = crate::helpers::http1(addr, "GET", path, &[], b"").await;
    (answer.status, answer.text())
}

struct Scraped(prometheus_parse::Scrape);

impl Scraped {
    async fn from(app: &TestApp) -> Self {
        let (status, body) = http_get(app.metrics_addr.expect("metrics are on"), "/metrics").await;
        assert_eq!(status, 200);
        let lines = body.lines().map(|line| Ok(line.to_owned()));
        Self(prometheus_parse::Scrape::parse(lines).expect("a valid exposition"))
    }

    /// The value of the sample named `name` whose labels include `labels` (0 when none).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self
            .0
            .samples
            .iter()
            .filter(|sample| sample.metric == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} samples",
            found.len()
        );
        found.first().map_or(0.0, |sample| match &sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => *value,
            other => panic!("{name} is not a scalar: {other:?}"),
        })
    }

    /// The cumulative count of histogram `name`'s last bucket (+Inf).
    fn last_bucket(&self, name: &str) -> f64 {
        let sample = self
            .0
            .samples
            .iter()
            .find(|sample| sample.metric == name)
            .unwrap_or_else(|| panic!("no histogram {name}"));
        match &sample.value {
            prometheus_parse::Value::Histogram(buckets) => {
                let last = buckets.last().expect("a histogram has buckets");
                assert_eq!(last.less_than, f64::INFINITY, "{buckets:?}");
                last.count
            }
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    fn handled(&self, method: &str, code: &str) -> f64 {
        self.value(
            "grpc_server_handled_total",
            &[("grpc_method", method), ("grpc_code", code)],
        )
    }
}

#[tokio::test]
async fn a_scrape_counts_each_call_by_method_code_and_message() {
    let app = TestApp::spawn_with(|settings| {
        settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut client = app.client().await;
    let ann = create(&mut client, "ann").await;
    let taken = client.create_user(new_user("ann")).await.unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    client
        .get_user(GetUserRequest {
            user_id: ann.id.clone(),
        })
        .await
        .unwrap();
    let missing = client
        .get_user(GetUserRequest {
            user_id: "0192a3b4-0000-7000-8000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    let mut watch = client
        .watch_users(crate::watch::everyone(1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_event(&mut watch).await.revision, 1);
    let watching = Scraped::from(&app).await;
    assert_eq!(
        watching.value("user_service_open_streams", &[("kind", "watch")]),
        1.0,
        "a live watcher"
    );
    drop(watch);

    // The watch is counted once the server has seen it end.
    let mut scraped = Scraped::from(&app).await;
    for _ in 0..100 {
        if scraped.handled("WatchUsers", "Canceled") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        scraped = Scraped::from(&app).await;
    }

    assert_eq!(scraped.handled("CreateUser", "OK"), 1.0);
    assert_eq!(scraped.handled("CreateUser", "AlreadyExists"), 1.0);
    assert_eq!(scraped.handled("GetUser", "OK"), 1.0);
    assert_eq!(scraped.handled("GetUser", "NotFound"), 1.0);
    assert_eq!(
        scraped.handled("DeleteUser", "OK"),
        0.0,
        "registered, never called"
    );
    assert_eq!(scraped.handled("WatchUsers", "Canceled"), 1.0);
    let create = [("grpc_method", "CreateUser")];
    assert_eq!(scraped.value("grpc_server_started_total", &create), 2.0);
    assert_eq!(
        scraped.value("grpc_server_msg_received_total", &create),
        2.0
    );
    assert_eq!(
        scraped.value("grpc_server_msg_sent_total", &create),
        1.0,
        "a refused create sends no message"
    );
    let watch = [
        ("grpc_method", "WatchUsers"),
        ("grpc_type", "server_stream"),
        ("grpc_service", "userservice.UserService"),
    ];
    assert_eq!(scraped.value("grpc_server_msg_sent_total", &watch), 1.0);
    let health = [
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Check"),
        ("grpc_type", "unary"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(scraped.value("grpc_server_handled_total", &health), 1.0);
    assert_eq!(
        scraped.value(
            "grpc_server_handling_seconds_count",
            &[("grpc_method", "GetUser")]
        ),
        2.0
    );
    assert_eq!(
        scraped.value("user_service_users", &[("status", "active")]),
        1.0
    );
    assert_eq!(
        scraped.value("user_service_event_log_head_revision", &[]),
        1.0
    );
    assert_eq!(
        scraped.value("user_service_open_streams", &[("kind", "watch")]),
        0.0,
        "the watcher is gone"
    );
    // The decoy hash made at start-up (logins of unknown users verify against it), and one
    // per create: the refused one was hashed before storage refused it.
    assert_eq!(
        scraped.value("user_service_argon2_duration_seconds_count", &[]),
        3.0
    );
    assert!(scraped.value("user_service_argon2_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(scraped.value("user_service_argon2_queue_depth", &[]), 0.0);
    // The successful create committed; the refused one may have shared its transaction.
    assert!(scraped.value("user_service_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(scraped.value("user_service_commit_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(
        scraped.last_bucket("user_service_commit_duration_seconds"),
        scraped.value("user_service_commit_duration_seconds_count", &[]),
        "every commit is in the last bucket"
    );
}

#[tokio::test]
async fn the_metrics_endpoint_serves_only_metrics() {
    let app = TestApp::spawn_with(|settings| {
        settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (status, _) = http_get(app.metrics_addr.unwrap(), "/other").await;
    assert_eq!(status, 404);
    let (_, body) = http_get(app.metrics_addr.unwrap(), "/metrics").await;
    let helps: Vec<&str> = body
        .lines()
        .filter(|line| line.starts_with("# HELP"))
        .collect();
    assert!(!helps.is_empty(), "{body}");
    for help in helps {
        assert!(
            help.ends_with('.') && !help.ends_with(".."),
            "one period at the end: {help}"
        );
    }
    let off = TestApp::spawn().await;
    assert_eq!(off.metrics_addr, None, "off unless asked for");
}

#[tokio::test]
async fn calls_refused_by_the_rate_limit_are_counted_by_reason() {
    let app = TestApp::spawn_with(|settings| {
        settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 1;
    })
    .await;
    let mut client = app.client().await;
    let mut refused = 0;
    for _ in 0..5 {
        let answer = client
            .get_user(GetUserRequest {
                user_id: "0192a3b4-0000-7000-8000-000000000000".into(),
            })
            .await;
        if answer.is_err_and(|status| status.code() == Code::ResourceExhausted) {
            refused += 1;
        }
    }
    assert!(refused >= 1, "a burst of 1 refuses some of 5 quick calls");
    let scraped = Scraped::from(&app).await;
    assert_eq!(
        scraped.value(
            "user_service_refused_calls_total",
            &[("reason", "rate_limit")]
        ),
        f64::from(refused)
    );
    assert_eq!(
        scraped.handled("GetUser", "ResourceExhausted"),
        f64::from(refused)
    );
    assert_eq!(
        scraped.handled("GetUser", "NotFound"),
        f64::from(5 - refused),
        "the others were answered"
    );
}

#[tokio::test]
async fn connect_and_grpc_web_calls_are_counted_under_the_method_they_call() {
    let app = TestApp::spawn_with(|settings| {
        settings.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let bearer = format!("Bearer {}", app.token("counted", Role::Admin));
    let unknown = GetUserRequest {
        user_id: "00000000-0000-7000-8000-000000000000".into(),
    };
    let path = "/userservice.UserService/GetUser";

    let json = crate::helpers::http1(
        app.addr,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        br#"{"userId":"00000000-0000-7000-8000-000000000000"}"#,
    )
    .await;
    let web = crate::helpers::http1(
        app.addr,
        "POST",
        path,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("authorization", &bearer),
        ],
        &crate::helpers::grpc_frame(&unknown),
    )
    .await;

    assert_eq!(json.status, 404);
    assert_eq!(web.header("grpc-status"), Some("5"));
    let scraped = Scraped::from(&app).await;
    assert_eq!(scraped.handled("GetUser", "NotFound"), 2.0, "one call each");
}
