//! Figure 9 (h2load): what relying parties and gateways call, on the full stack beside GetUser
//! on the same server in the same rounds: the JWKS (served from memory; target at least 0.8 of
//! GetUser's rate) and token introspection (target 10,000/s); the bare ceiling's GetUser rate,
//! with the same load generator, shows what h2load itself reaches.

use std::process::Command;

use super::get_user::{h2load, start_ceiling};
use super::{
    Suite, grpc_frame, installed, median, one_user, pin_to_core_0, row, server_process, token,
};
use user_service::pb;

/// h2load pinned to core 1 for `seconds`, with these arguments before the URL: requests per
/// second.
fn rate(args: &[&str], url: &str, seconds: u64) -> f64 {
    let output = Command::new("taskset")
        .args(["-c", "1", "h2load", "-c", "16", "-m", "32", "-t", "1"])
        .args(["-D", &seconds.to_string()])
        .args(args)
        .arg(url)
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let succeeded = text
        .lines()
        .find_map(|line| line.strip_prefix("status codes: "))
        .and_then(|codes| codes.split(' ').next())
        .and_then(|count| count.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(succeeded > 0, "no 2xx answers:\n{text}");
    text.lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|rate| rate.trim_end_matches(" req/s").parse().ok())
        .unwrap_or_else(|| panic!("h2load printed no rate:\n{text}"))
}

/// A Login's access token and an admin service key's secret, from the server at `url`.
async fn credentials(url: &str, username: &str) -> (String, String) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let access = pb::auth_service_client::AuthServiceClient::new(channel.clone())
        .login(pb::LoginRequest {
            username: username.into(),
            password: "seeded password".into(),
            ..Default::default()
        })
        .await
        .expect("a seeded user logs in")
        .into_inner()
        .access_token;
    let key = pb::auth_service_client::AuthServiceClient::with_interceptor(
        channel,
        user_service::cli::Bearer::new(Some(&token())).unwrap(),
    )
    .create_service_key(pb::CreateServiceKeyRequest {
        name: "introspection-bench".into(),
        role: pb::UserRole::User as i32,
        expires_at: None,
    })
    .await
    .expect("an admin makes a key")
    .into_inner()
    .secret;
    (access, key)
}

pub(super) async fn issuer(suite: &mut Suite) {
    println!(
        "\n9. The issuer: JWKS and introspection beside GetUser, h2load (server on core 0, h2load on core 1), median of 3 rounds"
    );
    if !installed("h2load") || !installed("taskset") {
        println!(
            "   h2load or taskset is missing: install them (apt-get install nghttp2-client util-linux)"
        );
        row(
            &mut suite.rows,
            "JWKS / GetUser, introspection (h2load)",
            "not measured: no h2load".into(),
            ">= 0.8; >= 10,000/s",
            "NOT measured".into(),
        );
        return;
    }
    let server = server_process(&suite.small, &[]);
    pin_to_core_0(server.pid());
    let user = one_user(server.url()).await;
    let (access, key) = credentials(server.url(), &user.username).await;
    let dir = suite.dir.path();
    let get_body = dir.join("issuer_get_user.bin");
    std::fs::write(
        &get_body,
        grpc_frame(&pb::GetUserRequest {
            user_id: user.id.clone(),
        }),
    )
    .unwrap();
    let form = dir.join("introspect.form");
    std::fs::write(&form, format!("token={access}")).unwrap();
    let ceiling_user = dir.join("issuer_ceiling_user.bin");
    std::fs::write(&ceiling_user, prost::Message::encode_to_vec(&user)).unwrap();
    let (mut ceiling, ceiling_url) = start_ceiling(&[], &ceiling_user);
    pin_to_core_0(ceiling.id());
    let bearer = format!("authorization: Bearer {key}");
    let form_arg = form.display().to_string();
    let introspect_args = [
        "-d",
        form_arg.as_str(),
        "-H",
        "content-type: application/x-www-form-urlencoded",
        "-H",
        bearer.as_str(),
    ];
    let (mut get, mut jwks, mut introspect, mut bare) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let token = token();
    for round in 1..=3 {
        get.push(h2load(server.url(), &get_body, &token, 5));
        jwks.push(rate(
            &[],
            &format!("{}/.well-known/jwks.json", server.url()),
            5,
        ));
        introspect.push(rate(
            &introspect_args,
            &format!("{}/oauth2/introspect", server.url()),
            5,
        ));
        bare.push(h2load(&ceiling_url, &get_body, &token, 5));
        println!(
            "   round {round}: GetUser {:.0}/s, JWKS {:.0}/s, introspection {:.0}/s, ceiling GetUser {:.0}/s",
            get[round - 1],
            jwks[round - 1],
            introspect[round - 1],
            bare[round - 1]
        );
    }
    let _ = ceiling.kill();
    let _ = ceiling.wait();
    let (get, jwks, introspect, bare) =
        (median(get), median(jwks), median(introspect), median(bare));
    let r = jwks / get;
    row(
        &mut suite.rows,
        "JWKS / GetUser, same server (h2load)",
        format!("{jwks:.0}/{get:.0}/s = {r:.2}"),
        ">= 0.8",
        if r >= 0.8 {
            "met".into()
        } else {
            "NOT met".into()
        },
    );
    row(
        &mut suite.rows,
        "Introspection of an ES256 access token (h2load)",
        format!("{introspect:.0}/s (h2load's own ceiling: {bare:.0}/s)"),
        ">= 10,000/s",
        if introspect >= 10_000.0 {
            "met".into()
        } else {
            "NOT met".into()
        },
    );
}
