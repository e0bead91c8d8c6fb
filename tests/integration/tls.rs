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
    let app = TestApp::spawn_with(|settings| {
        settings.tls = Some(TlsSettings {
            cert_pem: pki.server.0.clone().into_bytes(),
            key_pem: pki.server.1.clone().into_bytes(),
            client_ca_pem: None,
        });
    })
    .await;
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
    let app = TestApp::spawn_with(|settings| {
        settings.tls = Some(TlsSettings {
            cert_pem: pki.server.0.clone().into_bytes(),
            key_pem: pki.server.1.clone().into_bytes(),
            client_ca_pem: Some(pki.ca.clone().into_bytes()),
        });
    })
    .await;
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
