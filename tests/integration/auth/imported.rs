//! Password hashes imported from other systems: admins create users with them, the users log
//! in with their old passwords, and the first login replaces the hash with the server's own
//! Argon2id.

use std::sync::Arc;

use pbkdf2::PasswordHasher as _;
use tonic::Code;
use user_service::pb::{CreateUserRequest, UserRole};
use user_service::storage::{StorageSettings, Store};

use super::login::login;
use crate::helpers::{TestApp, TestDatabase, create_request, new_user};

const OLD_PASSWORD: &str = "the password from before";

fn importing(username: &str, hash: String) -> CreateUserRequest {
    CreateUserRequest {
        password: String::new(),
        password_hash: hash,
        ..new_user(username)
    }
}

/// The hash stored for `username`, read with the server stopped.
async fn stored_hash(database: Arc<TestDatabase>, username: &str) -> String {
    let store = Store::open(&StorageSettings {
        database_url: database.url().to_owned(),
        ..StorageSettings::default()
    })
    .await
    .unwrap();
    let (_, hash) = store
        .credentials(&user_service::domain::Username::parse(username.into()).unwrap())
        .await
        .unwrap()
        .unwrap();
    store.close().await.unwrap();
    hash.parameters().to_owned()
}

#[tokio::test]
async fn bcrypt_and_pbkdf2_imports_log_in_with_the_old_password_and_become_argon2id() {
    let app = TestApp::spawn().await;
    let mut admin = app.client().await;
    let bcrypt = bcrypt::hash(OLD_PASSWORD, 4).unwrap();
    let pbkdf2 = pbkdf2::Pbkdf2::new(
        pbkdf2::Algorithm::Pbkdf2Sha256,
        pbkdf2::Params::new(1000).unwrap(),
    )
    .hash_password_with_salt(OLD_PASSWORD.as_bytes(), b"sixteen byte slt")
    .unwrap()
    .to_string();

    admin
        .create_user(importing("from_bcrypt", bcrypt))
        .await
        .expect("an admin imports a bcrypt hash");
    let batch = admin
        .batch_create_users(tokio_stream::iter([importing("from_pbkdf2", pbkdf2)]))
        .await
        .expect("an admin imports a PBKDF2 hash in a batch")
        .into_inner();
    assert_eq!(batch.users.len(), 1, "{batch:?}");

    for username in ["from_bcrypt", "from_pbkdf2"] {
        let wrong = login(&app, username, "not the old password")
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated, "{username}: {wrong:?}");
        login(&app, username, OLD_PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("{username} logs in: {status:?}"));
    }
    let (stopped, app) = app.stop().await;
    stopped.unwrap();
    for username in ["from_bcrypt", "from_pbkdf2"] {
        let parameters = stored_hash(app.database.clone(), username).await;
        assert!(
            parameters.starts_with("$argon2id$v=19$"),
            "{username}'s first login replaced the hash: {parameters}"
        );
    }

    let database = app.database.clone();
    let again =
        TestApp::start_with(database.clone(), crate::helpers::test_settings(&database)).await;
    for username in ["from_bcrypt", "from_pbkdf2"] {
        login(&again, username, OLD_PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("{username} logs in after the upgrade: {status:?}"));
    }
}

#[tokio::test]
async fn sign_up_takes_a_password_never_a_hash() {
    let app = TestApp::spawn_with(|settings| settings.auth.allow_signup = true).await;
    let hash = bcrypt::hash(OLD_PASSWORD, 4).unwrap();
    let mut anonymous = app.client_with(None).await;
    let signed_up = anonymous
        .create_user(importing("signing_up", hash.clone()))
        .await
        .unwrap_err();
    assert_eq!(signed_up.code(), Code::Unauthenticated, "{signed_up:?}");
    assert!(
        signed_up.message().contains("token"),
        "{}",
        signed_up.message()
    );
    // Sign-up with a password still works.
    let plain = create_request(&mut anonymous, new_user("signing_up")).await;
    assert_eq!(plain.role, UserRole::User as i32);
}
