//! TLS and mutual TLS, with certificates made at run time.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use user_service::config::TlsSettings;
use user_service::pb::ListUsersRequest;

use crate::helpers::TestApp;

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn leaf(
    name: &str,
    purpose: ExtendedKeyUsagePurpose,
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![purpose];
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "user-service test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    Pki {
        ca: ca.pem(),
        server: leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth, &ca),
        client: leaf("test-client", ExtendedKeyUsagePurpose::ClientAuth, &ca),
    }
}

/// The server, serving TLS with this certificate and key, and requiring client certificates
/// from `client_ca` when given.
async fn serving_tls(cert: &str, key: &str, client_ca: Option<&str>) -> TestApp {
    let tls = TlsSettings {
        cert_pem: cert.as_bytes().to_vec(),
        key_pem: key.as_bytes().to_vec(),
        client_ca_pem: client_ca.map(|ca| ca.as_bytes().to_vec()),
    };
    TestApp::spawn_with(|settings| settings.listener.tls = Some(tls)).await
}

async fn connect(
    app: &TestApp,
    pki: &Pki,
    with_client_cert: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    }
    Endpoint::from_shared(format!("https://{}", app.addr))?
        .tls_config(tls)?
        .connect()
        .await
}

async fn list_over(app: &TestApp, channel: Channel) -> Result<(), tonic::Status> {
    app.client_on(channel)
        .list_users(ListUsersRequest::default())
        .await
        .map(drop)
}

#[tokio::test]
async fn the_server_speaks_tls_with_the_configured_certificate() {
    let pki = pki();
    let app = serving_tls(&pki.server.0, &pki.server.1, None).await;
    let channel = connect(&app, &pki, false)
        .await
        .expect("the TLS handshake succeeds");
    list_over(&app, channel).await.expect("calls work over TLS");

    let plaintext = app.channel().await;
    assert!(
        list_over(&app, plaintext).await.is_err(),
        "plaintext is refused"
    );
}

#[tokio::test]
async fn under_mutual_tls_only_clients_with_a_certificate_from_the_ca_get_in() {
    let pki = pki();
    let app = serving_tls(&pki.server.0, &pki.server.1, Some(&pki.ca)).await;
    let channel = connect(&app, &pki, true)
        .await
        .expect("the mTLS handshake succeeds");
    list_over(&app, channel)
        .await
        .expect("a client with a certificate is served");

    let refused = match connect(&app, &pki, false).await {
        Err(_) => true,
        Ok(channel) => list_over(&app, channel).await.is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
}

/// Runs userctl against `addr` with `args` and returns its exit code and standard error.
fn userctl_at(addr: &str, token: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_userctl"))
        .args(["--addr", addr, "--timeout", "5s"])
        .args(args)
        .env_remove("USERCTL_ADDR")
        .env("USERCTL_TOKEN", token)
        .env("USERCTL_CONFIG_DIR", "/nonexistent/userctl-tests")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("userctl runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn userctl_names_the_cause_of_a_failed_tls_handshake() {
    let (pki, other) = (self::pki(), self::pki());
    let mtls = serving_tls(&pki.server.0, &pki.server.1, Some(&pki.ca)).await;
    let plain = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", &pki.ca);
    let other_ca = write(dir.path(), "other-ca.pem", &other.ca);
    let cert = write(dir.path(), "client.pem", &pki.client.0);
    let key = write(dir.path(), "client.key", &pki.client.1);
    let other_cert = write(dir.path(), "other-client.pem", &other.client.0);
    let other_key = write(dir.path(), "other-client.key", &other.client.1);
    let token = mtls.token("ops", user_service::domain::Role::Admin);
    let tls_addr = format!("https://localhost:{}", mtls.addr.port());
    let list = ["list"];

    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "a server certificate from an unknown CA",
            tls_addr.clone(),
            vec![
                "--tls-ca",
                &other_ca,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ],
            "certificate was rejected",
        ),
        (
            "no client certificate",
            tls_addr.clone(),
            vec!["--tls-ca", &ca],
            "requires a client certificate",
        ),
        (
            "a client certificate the server does not trust",
            tls_addr.clone(),
            vec![
                "--tls-ca",
                &ca,
                "--tls-cert",
                &other_cert,
                "--tls-key",
                &other_key,
            ],
            "rejected the client certificate",
        ),
        (
            "plaintext to a TLS port",
            format!("http://localhost:{}", mtls.addr.port()),
            vec![],
            "https://",
        ),
        (
            "TLS to a plaintext port",
            format!("https://localhost:{}", plain.addr.port()),
            vec!["--tls-ca", &ca],
            "does not speak TLS",
        ),
    ];
    for (case, addr, flags, cause) in cases {
        let args = [flags.as_slice(), &list].concat();
        let (code, stderr) = userctl_at(&addr, &token, &args);
        assert_eq!(code, Some(5), "{case}: {stderr}");
        assert!(stderr.contains(cause), "{case}: {stderr}");
    }
    let args = [
        &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key][..],
        &list,
    ]
    .concat();
    let (code, stderr) = userctl_at(&tls_addr, &token, &args);
    assert_eq!(code, Some(0), "the right certificates work: {stderr}");
}

/// A self-signed certificate as `openssl req -x509` makes one: CA:TRUE, no key usage limits.
fn self_signed(name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes `text` to `dir/name`; the path, as a variable's value.
fn pem_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `user-service healthcheck` run as a container runs it: with the server's own variables.
async fn healthcheck(env: Vec<(&'static str, String)>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_user-service"));
        command.arg("healthcheck");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("USER_SERVICE_") {
                command.env_remove(name);
            }
        }
        command.envs(env).output().expect("the binary runs")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_speaks_tls_with_the_servers_own_settings() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| pem_file(dir.path(), name, text);
    let (cert, key) = self_signed("localhost");
    let app = serving_tls(&cert, &key, None).await;
    let server_env = vec![
        ("USER_SERVICE_LISTEN", app.addr.to_string()),
        ("USER_SERVICE_TLS_CERT", write("cert.pem", &cert)),
        ("USER_SERVICE_TLS_KEY", write("key.pem", &key)),
    ];
    let checked = healthcheck(server_env.clone()).await;
    assert!(
        checked.status.success(),
        "SERVING over TLS: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // Another certificate than the server's is refused, and says so.
    let (other, other_key) = self_signed("localhost");
    let checked = healthcheck(vec![
        ("USER_SERVICE_LISTEN", app.addr.to_string()),
        ("USER_SERVICE_TLS_CERT", write("other.pem", &other)),
        ("USER_SERVICE_TLS_KEY", write("other-key.pem", &other_key)),
    ])
    .await;
    assert!(
        !checked.status.success(),
        "a foreign certificate is not trusted"
    );
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("another certificate"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // Plaintext against a TLS server fails rather than hangs.
    let checked = healthcheck(vec![("USER_SERVICE_LISTEN", app.addr.to_string())]).await;
    assert!(
        !checked.status.success(),
        "plaintext is not SERVING over TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_presents_a_client_certificate_to_a_server_that_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| pem_file(dir.path(), name, text);
    let pki = pki();
    let app = serving_tls(&pki.server.0, &pki.server.1, Some(&pki.ca)).await;
    let server_env = vec![
        ("USER_SERVICE_LISTEN", app.addr.to_string()),
        ("USER_SERVICE_TLS_CERT", write("cert.pem", &pki.server.0)),
        ("USER_SERVICE_TLS_KEY", write("key.pem", &pki.server.1)),
        ("USER_SERVICE_TLS_CLIENT_CA", write("ca.pem", &pki.ca)),
    ];
    let mut with_client = server_env.clone();
    with_client.push((
        "USER_SERVICE_HEALTHCHECK_CLIENT_CERT",
        write("client.pem", &pki.client.0),
    ));
    with_client.push((
        "USER_SERVICE_HEALTHCHECK_CLIENT_KEY",
        write("client-key.pem", &pki.client.1),
    ));
    let checked = healthcheck(with_client).await;
    assert!(
        checked.status.success(),
        "SERVING over mutual TLS: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // The server's own certificate is for servers only here: the server refuses it as a
    // client's, and the check fails rather than hangs.
    let checked = healthcheck(server_env).await;
    assert!(!checked.status.success());
}
