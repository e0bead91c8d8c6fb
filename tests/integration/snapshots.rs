//! Snapshots reviewers see change: wire bytes, status codes and messages, the API surface,
//! and the validation limits.

use std::fmt::Write as _;

use prost::Message;
use tonic::Status;
use user_service::caller::Caller;
use user_service::contract::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use user_service::domain::{
    Actor, Email, EventKind, FullName, Metadata, Role, User, UserEvent, UserId, UserStatus,
    Username, limits,
};
use user_service::grpc::convert::{event_to_pb, timestamp, user_to_pb};
use user_service::grpc::page_token;
use user_service::pb;
use user_service::pb::auth_service_client::AuthServiceClient;
use user_service::storage::Cursor;

use crate::helpers::{Bearer, TestApp, create, new_user};

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => "../../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

const FIXED_ID: &str = "0192a3b4-c5d6-7e8f-9012-3456789abcde";
const FIXED_TIME_NS: i64 = 1_731_000_000_123_456_789;

fn fixed_user() -> User {
    User {
        id: UserId::parse("id", FIXED_ID).unwrap(),
        username: Username::parse("ann_lee".into()).unwrap(),
        email: Email::parse("ann@example.com".into()).unwrap(),
        full_name: FullName::parse("Ann Lee".into()).unwrap(),
        role: Role::User,
        status: UserStatus::Active,
        created_at_ns: FIXED_TIME_NS,
        updated_at_ns: FIXED_TIME_NS + 1_000,
        metadata: Metadata::parse([("team".to_string(), "core".to_string())]).unwrap(),
        revision: 42,
        email_verified: true,
    }
}

fn fixed_event(kind: EventKind) -> UserEvent {
    UserEvent {
        revision: 42,
        event_id: uuid::Uuid::parse_str("0192a3b4-c5d6-7e8f-9012-000000000042").unwrap(),
        kind,
        at_ns: FIXED_TIME_NS + 1_000,
        user: fixed_user(),
        actor: Actor::Service("billing".into()),
        previous: None,
    }
}

/// Who the wire snapshots' events are shown to: an admin, who sees every actor whole.
fn admin() -> Caller {
    Caller::Service {
        name: "admin".into(),
        role: Role::Admin,
    }
}

fn wire(label: &str, message: &(impl Message + std::fmt::Debug)) -> String {
    let hex: String = message
        .encode_to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("== {label}\nhex: {hex}\n{message:#?}\n\n")
}

/// A LoginResponse with fixed tokens and times.
fn login_response() -> pb::LoginResponse {
    pb::LoginResponse {
        access_token: "eyJ.access.token".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: FIXED_TIME_NS / 1_000_000_000 + 3600,
            nanos: 0,
        }),
        user: Some(user_to_pb(&fixed_user())),
        refresh_token: "rt_refresh-token".into(),
        refresh_expires_at: Some(prost_types::Timestamp {
            seconds: FIXED_TIME_NS / 1_000_000_000 + 30 * 24 * 3600,
            nanos: 0,
        }),
    }
}

fn update_request() -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user_id: FIXED_ID.into(),
        username: None,
        email: Some("ann.lee@example.com".into()),
        full_name: None,
        role: Some(pb::UserRole::Moderator as i32),
        metadata: [("team".to_string(), String::new())].into(),
        etag: Some("42".into()),
        status: None,
    }
}

fn service_key() -> pb::ServiceKey {
    pb::ServiceKey {
        id: FIXED_ID.into(),
        name: "ci-deploy".into(),
        role: pb::UserRole::Moderator as i32,
        created_at: Some(timestamp(FIXED_TIME_NS)),
        expires_at: Some(timestamp(FIXED_TIME_NS + 86_400_000_000_000)),
        last_used_at: None,
    }
}

#[test]
fn wire_messages_of_every_rpc() {
    let user = || Some(user_to_pb(&fixed_user()));
    let create_request = pb::CreateUserRequest {
        metadata: [("team".to_string(), "core".to_string())].into(),
        ..new_user("ann_lee")
    };
    // Tokens are sealed under each deployment's own key; this one's is fixed.
    let seal = page_token::TokenSeal::new(&[0; 32]);
    let token = page_token::encode(
        &seal,
        Cursor {
            created_at_ns: FIXED_TIME_NS,
            id: UserId::parse("id", FIXED_ID).unwrap(),
        },
        page_token::Filters {
            status: Some(UserStatus::Active),
            role: None,
        },
    );
    // Where an export of the fixed user goes on after it.
    let export_token = user_service::grpc::export::encode_token(
        &seal,
        user_service::grpc::export::Resume {
            revision: 7,
            after: UserId::parse("id", FIXED_ID).unwrap(),
        },
    );
    let cases = [
        ("create_user", [
            wire("CreateUserRequest", &create_request),
            wire("CreateUserResponse", &pb::CreateUserResponse { user: user() }),
        ].concat()),
        ("get_user", [
            wire("GetUserRequest", &pb::GetUserRequest { user_id: FIXED_ID.into() }),
            wire("GetUserResponse", &pb::GetUserResponse { user: user() }),
        ].concat()),
        ("update_user", [
            wire("UpdateUserRequest", &update_request()),
            wire("UpdateUserResponse", &pb::UpdateUserResponse { user: user() }),
        ].concat()),
        ("delete_user", [
            wire("DeleteUserRequest", &pb::DeleteUserRequest { user_id: FIXED_ID.into(), etag: Some("42".into()) }),
            wire("DeleteUserResponse", &pb::DeleteUserResponse {
                success: true,
                message: format!("user {FIXED_ID} deleted"),
            }),
        ].concat()),
        ("list_users", [
            wire("ListUsersRequest", &pb::ListUsersRequest {
                page_size: 1,
                page_token: String::new(),
                status_filter: pb::UserStatus::Active as i32,
                role_filter: 0,
                query: "ann".into(),
                filter: String::new(),
                order_by: String::new(),
            }),
            wire("ListUsersRequest (a filter and an order)", &pb::ListUsersRequest {
                page_size: 50,
                filter: "status = ACTIVE AND metadata.team = \"core\"".into(),
                order_by: "username desc".into(),
                ..Default::default()
            }),
            wire("ListUsersResponse", &pb::ListUsersResponse {
                users: vec![user_to_pb(&fixed_user())],
                next_page_token: token,
                total_count: 2,
            }),
        ].concat()),
        ("watch_users", [
            wire("WatchUsersRequest", &pb::WatchUsersRequest {
                user_ids: vec![FIXED_ID.into()],
                include_all: false,
                start_revision: 40,
                progress_notify: true,
                prev_user: true,
                filter: "role = ADMIN".into(),
            }),
            wire("UserEvent", &event_to_pb(fixed_event(EventKind::Created), &admin())),
            wire("UserEvent (an update, with prev_user)", &pb::UserEvent {
                prev_user: Some(user_to_pb(&User {
                    full_name: FullName::parse("Ann Before".into()).unwrap(),
                    revision: 41,
                    ..fixed_user()
                })),
                ..event_to_pb(fixed_event(EventKind::Updated), &admin())
            }),
        ].concat()),
        ("batch_create_users", [
            wire("CreateUserRequest (one of the stream)", &new_user("ann_lee")),
            wire("BatchCreateUsersResponse", &pb::BatchCreateUsersResponse {
                users: vec![user_to_pb(&fixed_user())],
                errors: vec!["item 1 (username \"x\"): username: must be 3-30 characters of ASCII letters, digits or '_', got 1 character".into()],
                failures: vec![pb::BatchItemError {
                    position: 1,
                    last_position: 1,
                    code: tonic::Code::InvalidArgument as i32,
                    field: "username".into(),
                    message: "must be 3-30 characters of ASCII letters, digits or '_', got 1 character".into(),
                }],
            }),
        ].concat()),
        ("sync_users", [
            wire("UpdateUserRequest (one of the stream)", &update_request()),
            wire("UserEvent (applied)", &event_to_pb(fixed_event(EventKind::Updated), &admin())),
            wire("UserEvent (failed)", &pb::UserEvent {
                failure: Some(pb::SyncFailure {
                    user_id: FIXED_ID.into(),
                    code: tonic::Code::NotFound as i32,
                    message: format!("user {FIXED_ID} not found"),
                }),
                ..Default::default()
            }),
        ].concat()),
        ("lookup_user", [
            wire("LookupUserRequest", &pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::Email("ann@example.com".into())),
            }),
            wire("GetUserResponse", &pb::GetUserResponse { user: user() }),
        ].concat()),
        ("login", [
            wire("LoginRequest", &pb::LoginRequest {
                username: "ann_lee".into(),
                password: "correct horse battery".into(),
                ..Default::default()
            }),
            wire("LoginResponse", &login_response()),
        ].concat()),
        ("refresh", [
            wire("RefreshRequest", &pb::RefreshRequest { refresh_token: "rt_refresh-token".into() }),
            wire("LoginResponse", &login_response()),
        ].concat()),
        ("logout", [
            wire("LogoutRequest", &pb::LogoutRequest {}),
            wire("LogoutResponse", &pb::LogoutResponse {}),
        ].concat()),
        ("end_sessions", [
            wire("EndSessionsRequest", &pb::EndSessionsRequest { user_id: FIXED_ID.into() }),
            wire("EndSessionsResponse", &pb::EndSessionsResponse { ended: 2 }),
        ].concat()),
        ("batch_get_users", [
            wire("BatchGetUsersRequest", &pb::BatchGetUsersRequest {
                user_ids: vec![FIXED_ID.into(), UNKNOWN_ID.into()],
            }),
            wire("BatchGetUsersResponse", &pb::BatchGetUsersResponse {
                users: vec![user_to_pb(&fixed_user())],
                missing_ids: vec![UNKNOWN_ID.into()],
            }),
        ].concat()),
        ("export_users", [
            wire("ExportUsersRequest", &pb::ExportUsersRequest {
                include_password_hashes: true,
                resume_token: export_token.clone(),
            }),
            wire("ExportUsersResponse", &pb::ExportUsersResponse {
                users: vec![pb::ExportedUser {
                    user: user(),
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA".into(),
                }],
                revision: 7,
                resume_token: export_token.clone(),
                total_users: 1,
                done: false,
            }),
            wire("ExportUsersResponse (last)", &pb::ExportUsersResponse {
                revision: 7,
                resume_token: export_token.clone(),
                total_users: 1,
                done: true,
                users: Vec::new(),
            }),
        ].concat()),
        ("recovery_and_verification", [
            wire("StartRecoveryRequest", &pb::StartRecoveryRequest { login: "ann@example.com".into() }),
            wire("StartRecoveryResponse", &pb::StartRecoveryResponse {}),
            wire("CompleteRecoveryRequest", &pb::CompleteRecoveryRequest {
                login: "ann_lee".into(),
                code: "4kx7m-q2hzp".into(),
                new_password: "a long new passphrase".into(),
            }),
            wire("CompleteRecoveryResponse", &pb::CompleteRecoveryResponse {
                second_factor_enabled: true,
            }),
            wire("StartEmailVerificationRequest", &pb::StartEmailVerificationRequest { user_id: FIXED_ID.into() }),
            wire("StartEmailVerificationResponse", &pb::StartEmailVerificationResponse {
                expires_at: Some(timestamp(FIXED_TIME_NS)),
            }),
            wire("VerifyEmailRequest", &pb::VerifyEmailRequest {
                login: "ann_lee".into(),
                code: "4kx7m-q2hzp".into(),
            }),
            wire("VerifyEmailResponse", &pb::VerifyEmailResponse { user: user() }),
            wire("WatchDeliveriesRequest", &pb::WatchDeliveriesRequest { after_revision: 41 }),
            wire("Delivery", &pb::Delivery {
                revision: 42,
                purpose: pb::DeliveryPurpose::Recovery as i32,
                user_id: FIXED_ID.into(),
                username: "ann_lee".into(),
                email: "ann@example.com".into(),
                code: "4kx7m-q2hzp".into(),
                expires_at: Some(timestamp(FIXED_TIME_NS)),
            }),
            wire("Delivery (a notice)", &pb::Delivery {
                revision: 43,
                purpose: pb::DeliveryPurpose::SecondFactorEnabled as i32,
                user_id: FIXED_ID.into(),
                username: "ann_lee".into(),
                email: "ann@example.com".into(),
                code: String::new(),
                expires_at: Some(timestamp(FIXED_TIME_NS)),
            }),
        ].concat()),
        ("second_factor", [
            wire("EnrollTotpRequest", &pb::EnrollTotpRequest {
                current_password: "correct horse battery".into(),
            }),
            wire("EnrollTotpResponse", &pb::EnrollTotpResponse {
                secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into(),
                otpauth_uri: "otpauth://totp/user%2Dservice:ann_lee?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=user%2Dservice&algorithm=SHA1&digits=6&period=30".into(),
                qr_code_svg: "<svg xmlns=\"http://www.w3.org/2000/svg\"/>".into(),
            }),
            wire("ConfirmTotpRequest", &pb::ConfirmTotpRequest { code: "123456".into() }),
            wire("ConfirmTotpResponse", &pb::ConfirmTotpResponse {
                recovery_codes: vec!["abcd-efgh-jkmn".into(), "pqrs-tuvw-xyz2".into()],
            }),
            wire("DisableTotpRequest", &pb::DisableTotpRequest {
                user_id: FIXED_ID.into(),
                code: "123456".into(),
            }),
            wire("DisableTotpResponse", &pb::DisableTotpResponse {}),
            wire("LoginRequest", &pb::LoginRequest {
                username: "ann_lee".into(),
                password: "correct horse battery".into(),
                second_factor_code: "123456".into(),
            }),
        ].concat()),
        ("service_keys", [
            wire("CreateServiceKeyRequest", &pb::CreateServiceKeyRequest {
                name: "ci-deploy".into(),
                role: pb::UserRole::Moderator as i32,
                expires_at: Some(timestamp(FIXED_TIME_NS)),
            }),
            wire("CreateServiceKeyResponse", &pb::CreateServiceKeyResponse {
                key: Some(service_key()),
                secret: "usk_0192a3b4c5d67e8f90123456789abcde_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlYw".into(),
            }),
            wire("ListServiceKeysRequest", &pb::ListServiceKeysRequest {}),
            wire("ListServiceKeysResponse", &pb::ListServiceKeysResponse {
                keys: vec![pb::ServiceKey {
                    last_used_at: Some(timestamp(FIXED_TIME_NS)),
                    ..service_key()
                }],
            }),
            wire("RevokeServiceKeyRequest", &pb::RevokeServiceKeyRequest { key_id: FIXED_ID.into() }),
            wire("RevokeServiceKeyResponse", &pb::RevokeServiceKeyResponse {}),
        ].concat()),
        ("clear_login_failures", [
            wire("ClearLoginFailuresRequest", &pb::ClearLoginFailuresRequest { user_id: FIXED_ID.into() }),
            wire("ClearLoginFailuresResponse", &pb::ClearLoginFailuresResponse { failures: 12 }),
        ].concat()),
        ("change_password", [
            wire("ChangePasswordRequest", &pb::ChangePasswordRequest {
                user_id: String::new(),
                current_password: "correct horse battery".into(),
                new_password: "a longer passphrase".into(),
            }),
            wire("ChangePasswordResponse", &pb::ChangePasswordResponse { login: Some(login_response()) }),
        ].concat()),
    ];
    for (rpc, text) in cases {
        snapshot!(format!("wire_{rpc}"), text);
    }
}

fn describe(result: Result<impl std::fmt::Debug, Status>) -> String {
    match result {
        Ok(_) => "OK".into(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// One table of answers to bad input: a row per case, locked as the snapshot `name`.
struct Table {
    name: &'static str,
    rows: String,
}

impl Table {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            rows: String::new(),
        }
    }

    fn row(&mut self, rpc: &str, case: &str, outcome: String) {
        writeln!(self.rows, "{rpc:<16} | {case:<40} | {outcome}").unwrap();
    }

    fn lock(self) {
        snapshot!(self.name, self.rows);
    }
}

/// An id no user has.
const UNKNOWN_ID: &str = "0192a3b4-0000-7000-8000-000000000000";

/// A server, an admin's client and one user, ann, for a table's cases to refer to.
async fn app_with_ann() -> (TestApp, crate::helpers::Client, pb::User) {
    let app = TestApp::spawn().await;
    let mut client = app.client().await;
    let ann = create(&mut client, "ann").await;
    (app, client, ann)
}

/// CreateUser: each field rule, taken names, password hashes.
#[tokio::test]
async fn status_codes_of_create_user() {
    // ann's name and email are taken.
    let (_app, mut client, _) = app_with_ann().await;
    let mut table = Table::new("status_codes_create_user");
    let create_cases: Vec<(&str, pb::CreateUserRequest)> = vec![
        (
            "username too short",
            pb::CreateUserRequest {
                username: "ab".into(),
                ..new_user("x")
            },
        ),
        (
            "username too long",
            pb::CreateUserRequest {
                username: "a".repeat(31),
                ..new_user("x")
            },
        ),
        (
            "username not ASCII",
            pb::CreateUserRequest {
                username: "jörg".into(),
                ..new_user("joerg")
            },
        ),
        (
            "email malformed",
            pb::CreateUserRequest {
                email: "ann.example.com".into(),
                ..new_user("bob")
            },
        ),
        (
            "email without dotted domain",
            pb::CreateUserRequest {
                email: "bob@localhost".into(),
                ..new_user("bob")
            },
        ),
        (
            "email too long",
            pb::CreateUserRequest {
                email: format!("{}@{}.com", "b".repeat(64), "c".repeat(190)),
                ..new_user("bob")
            },
        ),
        (
            "password 7 characters",
            pb::CreateUserRequest {
                password: "ééééééé".into(),
                ..new_user("bob")
            },
        ),
        (
            "password 129 characters",
            pb::CreateUserRequest {
                password: "p".repeat(129),
                ..new_user("bob")
            },
        ),
        (
            "full_name with a newline",
            pb::CreateUserRequest {
                full_name: "Bob\nB".into(),
                ..new_user("bob")
            },
        ),
        (
            "full_name too long",
            pb::CreateUserRequest {
                full_name: "f".repeat(129),
                ..new_user("bob")
            },
        ),
        (
            "role undefined",
            pb::CreateUserRequest {
                role: 7,
                ..new_user("bob")
            },
        ),
        (
            "metadata 33 entries",
            pb::CreateUserRequest {
                metadata: (0..33)
                    .map(|i| (format!("k{i:02}"), "v".to_string()))
                    .collect(),
                ..new_user("bob")
            },
        ),
        (
            "status DELETED",
            pb::CreateUserRequest {
                status: pb::UserStatus::Deleted as i32,
                ..new_user("bob")
            },
        ),
        (
            "status out of range",
            pb::CreateUserRequest {
                status: 9,
                ..new_user("bob")
            },
        ),
        (
            "metadata key with a space",
            pb::CreateUserRequest {
                metadata: [("a b".to_string(), "v".to_string())].into(),
                ..new_user("bob")
            },
        ),
        (
            "metadata value too long",
            pb::CreateUserRequest {
                metadata: [("k".to_string(), "v".repeat(513))].into(),
                ..new_user("bob")
            },
        ),
        (
            "metadata empty value",
            pb::CreateUserRequest {
                metadata: [("k".to_string(), String::new())].into(),
                ..new_user("bob")
            },
        ),
        (
            "username taken (other case)",
            pb::CreateUserRequest {
                email: "ann2@example.com".into(),
                ..new_user("ANN")
            },
        ),
        (
            "email taken (other case)",
            pb::CreateUserRequest {
                email: "ANN@example.com".into(),
                ..new_user("ann2")
            },
        ),
        (
            "password and password_hash both",
            pb::CreateUserRequest {
                password_hash: "$2b$04$abcdefghijklmnopqrstuuVbsuMsXIBR3YrmyTAqElyDHWDmgSFbe"
                    .into(),
                ..new_user("both")
            },
        ),
        (
            "password_hash of an unsupported algorithm",
            pb::CreateUserRequest {
                password: String::new(),
                password_hash: "$1$saltsalt$hash".into(),
                ..new_user("md5crypt")
            },
        ),
        (
            "password_hash with costs its algorithm refuses",
            pb::CreateUserRequest {
                password: String::new(),
                password_hash: "$argon2id$v=19$m=1,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA$aGFzaGhhc2hoYXNo"
                    .into(),
                ..new_user("tiny_argon")
            },
        ),
        ("everything wrong", pb::CreateUserRequest::default()),
    ];
    for (case, request) in create_cases {
        table.row(
            "CreateUser",
            case,
            describe(client.create_user(request).await),
        );
    }

    table.lock();
}

/// GetUser: ids that are empty, malformed or unknown.
#[tokio::test]
async fn status_codes_of_get_user() {
    let (_app, mut client, _) = app_with_ann().await;
    let mut table = Table::new("status_codes_get_user");
    for (case, user_id) in [
        ("empty user_id", String::new()),
        ("user_id that is not a UUID", "42".to_string()),
        ("unknown user_id", UNKNOWN_ID.into()),
    ] {
        table.row(
            "GetUser",
            case,
            describe(client.get_user(pb::GetUserRequest { user_id }).await),
        );
    }
    table.row(
        "BatchGetUsers",
        "more than 1,000 user_ids",
        describe(
            client
                .batch_get_users(pb::BatchGetUsersRequest {
                    user_ids: vec![UNKNOWN_ID.into(); 1_001],
                })
                .await,
        ),
    );
    table.row(
        "BatchGetUsers",
        "unknown and malformed user_ids",
        describe(
            client
                .batch_get_users(pb::BatchGetUsersRequest {
                    user_ids: vec![UNKNOWN_ID.into(), "42".into()],
                })
                .await,
        ),
    );

    table.lock();
}

/// UpdateUser: unknown ids, enum values, etags, fields, and a status only deletion sets.
#[tokio::test]
async fn status_codes_of_update_user() {
    let (_app, mut client, ann) = app_with_ann().await;
    let mut table = Table::new("status_codes_update_user");
    let update_cases: Vec<(&str, pb::UpdateUserRequest)> = vec![
        (
            "unknown user_id",
            pb::UpdateUserRequest {
                user_id: UNKNOWN_ID.into(),
                ..Default::default()
            },
        ),
        (
            "role UNSPECIFIED",
            pb::UpdateUserRequest {
                user_id: ann.id.clone(),
                role: Some(0),
                ..Default::default()
            },
        ),
        (
            "malformed etag",
            pb::UpdateUserRequest {
                user_id: ann.id.clone(),
                etag: Some("W/\"x\"".into()),
                ..Default::default()
            },
        ),
        (
            "stale etag",
            pb::UpdateUserRequest {
                user_id: ann.id.clone(),
                etag: Some("999".into()),
                ..Default::default()
            },
        ),
        (
            "bad username and email",
            pb::UpdateUserRequest {
                user_id: ann.id.clone(),
                username: Some("a-b".into()),
                email: Some("@".into()),
                ..Default::default()
            },
        ),
    ];
    for (case, request) in update_cases {
        table.row(
            "UpdateUser",
            case,
            describe(client.update_user(request).await),
        );
    }

    let status = pb::UpdateUserRequest {
        user_id: ann.id.clone(),
        status: Some(pb::UserStatus::Deleted as i32),
        ..Default::default()
    };
    table.row(
        "UpdateUser",
        "status DELETED",
        describe(client.update_user(status).await),
    );

    table.lock();
}

/// DeleteUser: an unknown id and a stale etag.
#[tokio::test]
async fn status_codes_of_delete_user() {
    let (_app, mut client, ann) = app_with_ann().await;
    let mut table = Table::new("status_codes_delete_user");
    for (case, request) in [
        (
            "unknown user_id",
            pb::DeleteUserRequest {
                user_id: UNKNOWN_ID.into(),
                etag: None,
            },
        ),
        (
            "stale etag",
            pb::DeleteUserRequest {
                user_id: ann.id.clone(),
                etag: Some("999".into()),
            },
        ),
    ] {
        table.row(
            "DeleteUser",
            case,
            describe(client.delete_user(request).await),
        );
    }

    table.lock();
}

/// ListUsers: page sizes, page tokens and filters.
#[tokio::test]
async fn status_codes_of_list_users() {
    let (_app, mut client, _) = app_with_ann().await;
    let mut table = Table::new("status_codes_list_users");
    let list_cases = [
        (
            "negative page_size",
            pb::ListUsersRequest {
                page_size: -5,
                ..Default::default()
            },
        ),
        (
            "malformed page_token",
            pb::ListUsersRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
        ),
        (
            "undefined status_filter",
            pb::ListUsersRequest {
                status_filter: 12,
                ..Default::default()
            },
        ),
        (
            "undefined role_filter",
            pb::ListUsersRequest {
                role_filter: 12,
                ..Default::default()
            },
        ),
        (
            "filter with an unknown field",
            pb::ListUsersRequest {
                filter: "status = ACTIVE AND nickname = \"x\"".into(),
                ..Default::default()
            },
        ),
        (
            "filter with a missing value",
            pb::ListUsersRequest {
                filter: "(role = ADMIN OR status =)".into(),
                ..Default::default()
            },
        ),
        (
            "filter with a wildcard inside",
            pb::ListUsersRequest {
                filter: "email = \"a*b\"".into(),
                ..Default::default()
            },
        ),
        (
            "filter with a bad timestamp",
            pb::ListUsersRequest {
                filter: "created_at > \"2024-13-01\"".into(),
                ..Default::default()
            },
        ),
        (
            "filter over its length",
            pb::ListUsersRequest {
                filter: "username = a OR ".repeat(200),
                ..Default::default()
            },
        ),
        (
            "order_by of an unknown field",
            pb::ListUsersRequest {
                order_by: "email desc".into(),
                ..Default::default()
            },
        ),
        (
            "query with a filter",
            pb::ListUsersRequest {
                query: "ann".into(),
                filter: "status = ACTIVE".into(),
                ..Default::default()
            },
        ),
    ];
    for (case, request) in list_cases {
        table.row(
            "ListUsers",
            case,
            describe(client.list_users(request).await),
        );
    }
    create(&mut client, "second_user").await;
    let token = client
        .list_users(pb::ListUsersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let mut forged = token.clone();
    forged.insert(0, 'A');
    table.row(
        "ListUsers",
        "page_token not sealed by this deployment",
        describe(
            client
                .list_users(pb::ListUsersRequest {
                    page_token: forged,
                    ..Default::default()
                })
                .await,
        ),
    );
    let other_filters = pb::ListUsersRequest {
        page_token: token,
        role_filter: 2,
        ..Default::default()
    };
    table.row(
        "ListUsers",
        "token with other filters",
        describe(client.list_users(other_filters).await),
    );

    table.lock();
}

/// WatchUsers: what a watch selects and where it starts.
#[tokio::test]
async fn status_codes_of_watch_users() {
    let (_app, mut client, _) = app_with_ann().await;
    let mut table = Table::new("status_codes_watch_users");
    let watch_cases = [
        ("selects nothing", pb::WatchUsersRequest::default()),
        (
            "malformed user_ids",
            pb::WatchUsersRequest {
                user_ids: vec!["x".into(), UNKNOWN_ID.into(), String::new()],
                ..Default::default()
            },
        ),
        (
            "negative start_revision",
            pb::WatchUsersRequest {
                include_all: true,
                start_revision: -1,
                ..Default::default()
            },
        ),
    ];
    for (case, request) in watch_cases {
        table.row(
            "WatchUsers",
            case,
            describe(client.watch_users(request).await),
        );
    }
    let export_cases = [
        ("malformed resume_token", "djE6MTow"),
        ("resume_token of another kind", "not base64!"),
    ];
    for (case, token) in export_cases {
        let request = pb::ExportUsersRequest {
            resume_token: token.into(),
            ..Default::default()
        };
        table.row(
            "ExportUsers",
            case,
            describe(client.export_users(request).await),
        );
    }

    table.lock();
}

/// Callers refused: no token, a malformed one, and what a plain user may not do.
#[tokio::test]
async fn status_codes_of_callers_refused() {
    let (app, mut client, ann) = app_with_ann().await;
    let mut table = Table::new("status_codes_callers_refused");
    let anonymous = app.client_with(None).await;
    let garbage = app.client_with(Some("not.a.token")).await;
    let plain = create(&mut client, "plain").await;
    let as_plain = app
        .client_with(Some(&app.token(&plain.id, Role::User)))
        .await;
    let list = || pb::ListUsersRequest::default();
    let auth_cases = [
        ("no token", anonymous, list()),
        ("malformed token", garbage, list()),
        ("user lists", as_plain, list()),
    ];
    for (case, mut caller, request) in auth_cases {
        table.row(
            "ListUsers",
            case,
            describe(caller.list_users(request).await),
        );
    }
    let mut as_plain = app
        .client_with(Some(&app.token(&plain.id, Role::User)))
        .await;
    let raise = pb::UpdateUserRequest {
        user_id: plain.id.clone(),
        role: Some(pb::UserRole::Admin as i32),
        ..Default::default()
    };
    table.row(
        "UpdateUser",
        "user raises own role",
        describe(as_plain.update_user(raise).await),
    );
    let other = pb::GetUserRequest {
        user_id: ann.id.clone(),
    };
    table.row(
        "GetUser",
        "user reads another",
        describe(as_plain.get_user(other).await),
    );
    let batch = tokio_stream::iter([new_user("sneaky")]);
    table.row(
        "BatchCreateUsers",
        "user batch-creates",
        describe(as_plain.batch_create_users(batch).await),
    );
    table.row(
        "ExportUsers",
        "user exports",
        describe(
            as_plain
                .export_users(pb::ExportUsersRequest::default())
                .await,
        ),
    );

    table.lock();
}

/// AuthService: logins, refresh tokens, logout, password changes and ended sessions.
#[tokio::test]
async fn status_codes_of_auth_service() {
    let (app, mut client, ann) = app_with_ann().await;
    let plain = create(&mut client, "plain").await;
    let mut table = Table::new("status_codes_auth_service");
    let mut login = AuthServiceClient::new(app.channel().await);
    let wrong = pb::LoginRequest {
        username: "ann".into(),
        password: "wrong password".into(),
        ..Default::default()
    };
    table.row(
        "Login",
        "wrong password",
        describe(login.login(wrong).await),
    );
    let unknown = pb::LoginRequest {
        username: "nobody".into(),
        password: "wrong password".into(),
        ..Default::default()
    };
    table.row(
        "Login",
        "unknown username",
        describe(login.login(unknown).await),
    );
    let refresh = |refresh_token: &str| pb::RefreshRequest {
        refresh_token: refresh_token.into(),
    };
    table.row(
        "Refresh",
        "refresh_token empty",
        describe(login.refresh(refresh("")).await),
    );
    table.row(
        "Refresh",
        "refresh_token not a token",
        describe(login.refresh(refresh("not-a-token")).await),
    );
    table.row(
        "Refresh",
        "refresh_token unknown",
        describe(
            login
                .refresh(refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
                .await,
        ),
    );
    let mut plain_auth = AuthServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&app.token(&plain.id, Role::User))).unwrap(),
    );
    table.row(
        "Logout",
        "token without a session",
        describe(plain_auth.logout(pb::LogoutRequest {}).await),
    );
    let change = |current: &str, new: &str, user_id: &str| pb::ChangePasswordRequest {
        user_id: user_id.into(),
        current_password: current.into(),
        new_password: new.into(),
    };
    table.row(
        "ChangePassword",
        "current password wrong",
        describe(
            plain_auth
                .change_password(change("not the password", "a new password", ""))
                .await,
        ),
    );
    table.row(
        "ChangePassword",
        "new_password too short",
        describe(
            plain_auth
                .change_password(change("correct horse battery", "short", ""))
                .await,
        ),
    );
    table.row(
        "ChangePassword",
        "user sets another's",
        describe(
            plain_auth
                .change_password(change("", "a new password", &ann.id))
                .await,
        ),
    );
    table.row(
        "EndSessions",
        "user ends another's",
        describe(
            plain_auth
                .end_sessions(pb::EndSessionsRequest {
                    user_id: ann.id.clone(),
                })
                .await,
        ),
    );
    let mut admin_auth = AuthServiceClient::with_interceptor(
        app.channel().await,
        Bearer::new(Some(&app.token("admin", Role::Admin))).unwrap(),
    );
    table.row(
        "EndSessions",
        "unknown user",
        describe(
            admin_auth
                .end_sessions(pb::EndSessionsRequest {
                    user_id: UNKNOWN_ID.into(),
                })
                .await,
        ),
    );
    let mut anonymous_auth = AuthServiceClient::new(app.channel().await);
    table.row(
        "StartRecovery",
        "login neither a username nor an email",
        describe(
            anonymous_auth
                .start_recovery(pb::StartRecoveryRequest { login: "no".into() })
                .await,
        ),
    );
    table.row(
        "StartRecovery",
        "unknown user (answered as any other)",
        describe(
            anonymous_auth
                .start_recovery(pb::StartRecoveryRequest {
                    login: "nobody_here".into(),
                })
                .await,
        ),
    );
    table.row(
        "CompleteRecovery",
        "code not the shape sent",
        describe(
            anonymous_auth
                .complete_recovery(pb::CompleteRecoveryRequest {
                    login: "ann".into(),
                    code: "123".into(),
                    new_password: "a long new passphrase".into(),
                })
                .await,
        ),
    );
    table.row(
        "CompleteRecovery",
        "no code was asked for",
        describe(
            anonymous_auth
                .complete_recovery(pb::CompleteRecoveryRequest {
                    login: "ann".into(),
                    code: "22222-22222".into(),
                    new_password: "a long new passphrase".into(),
                })
                .await,
        ),
    );
    table.row(
        "VerifyEmail",
        "no code was asked for",
        describe(
            anonymous_auth
                .verify_email(pb::VerifyEmailRequest {
                    login: "ann".into(),
                    code: "22222-22222".into(),
                })
                .await,
        ),
    );
    table.row(
        "StartEmailVerification",
        "user asks for another's",
        describe(
            plain_auth
                .start_email_verification(pb::StartEmailVerificationRequest {
                    user_id: ann.id.clone(),
                })
                .await,
        ),
    );
    table.row(
        "WatchDeliveries",
        "a user reads deliveries",
        describe(
            plain_auth
                .watch_deliveries(pb::WatchDeliveriesRequest::default())
                .await
                .map(drop),
        ),
    );
    table.row(
        "EnrollTotp",
        "a service enrolls",
        describe(
            admin_auth
                .enroll_totp(pb::EnrollTotpRequest::default())
                .await,
        ),
    );
    table.row(
        "ConfirmTotp",
        "code not six digits",
        describe(
            plain_auth
                .confirm_totp(pb::ConfirmTotpRequest {
                    code: "12345".into(),
                })
                .await,
        ),
    );
    table.row(
        "ConfirmTotp",
        "nothing enrolled",
        describe(
            plain_auth
                .confirm_totp(pb::ConfirmTotpRequest {
                    code: "123456".into(),
                })
                .await,
        ),
    );
    table.row(
        "DisableTotp",
        "own without a code",
        describe(
            plain_auth
                .disable_totp(pb::DisableTotpRequest::default())
                .await,
        ),
    );
    table.row(
        "DisableTotp",
        "user disables another's",
        describe(
            plain_auth
                .disable_totp(pb::DisableTotpRequest {
                    user_id: ann.id.clone(),
                    code: String::new(),
                })
                .await,
        ),
    );
    table.row(
        "DisableTotp",
        "admin, none enrolled",
        describe(
            admin_auth
                .disable_totp(pb::DisableTotpRequest {
                    user_id: ann.id.clone(),
                    code: String::new(),
                })
                .await,
        ),
    );
    table.row(
        "CreateServiceKey",
        "moderator creates one",
        describe(
            AuthServiceClient::with_interceptor(
                app.channel().await,
                Bearer::new(Some(&app.token("helpdesk", Role::Moderator))).unwrap(),
            )
            .create_service_key(pb::CreateServiceKeyRequest {
                name: "ci".into(),
                role: pb::UserRole::User as i32,
                expires_at: None,
            })
            .await,
        ),
    );
    table.row(
        "CreateServiceKey",
        "name and role missing",
        describe(
            admin_auth
                .create_service_key(pb::CreateServiceKeyRequest::default())
                .await,
        ),
    );
    table.row(
        "CreateServiceKey",
        "expires_at in the past",
        describe(
            admin_auth
                .create_service_key(pb::CreateServiceKeyRequest {
                    name: "ci".into(),
                    role: pb::UserRole::User as i32,
                    expires_at: Some(prost_types::Timestamp {
                        seconds: 1,
                        nanos: 0,
                    }),
                })
                .await,
        ),
    );
    table.row(
        "RevokeServiceKey",
        "key_id not a uuid",
        describe(
            admin_auth
                .revoke_service_key(pb::RevokeServiceKeyRequest {
                    key_id: "not-a-uuid".into(),
                })
                .await,
        ),
    );
    table.row(
        "RevokeServiceKey",
        "unknown key",
        describe(
            admin_auth
                .revoke_service_key(pb::RevokeServiceKeyRequest {
                    key_id: UNKNOWN_ID.into(),
                })
                .await,
        ),
    );
    table.row(
        "ListUsers",
        "a service key that was never issued",
        describe(
            app.client_with(Some(
                "usk_0192a3b40000700080000000000000ff_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ))
            .await
            .list_users(pb::ListUsersRequest::default())
            .await,
        ),
    );
    let clear = |user_id: &str| pb::ClearLoginFailuresRequest {
        user_id: user_id.into(),
    };
    table.row(
        "ClearLoginFailures",
        "user clears their own",
        describe(plain_auth.clear_login_failures(clear(&plain.id)).await),
    );
    table.row(
        "ClearLoginFailures",
        "user_id not a uuid",
        describe(admin_auth.clear_login_failures(clear("not-a-uuid")).await),
    );
    table.row(
        "ClearLoginFailures",
        "unknown user",
        describe(admin_auth.clear_login_failures(clear(UNKNOWN_ID)).await),
    );

    table.lock();
}

/// The rate limiter's refusal.
#[tokio::test]
async fn status_codes_of_the_rate_limit() {
    let list = || pb::ListUsersRequest::default();
    let mut table = Table::new("status_codes_rate_limit");
    let limited = TestApp::spawn_with(|settings| {
        settings.limits.rate_limit_per_second = 1;
        settings.limits.rate_limit_burst = 1;
    })
    .await;
    let mut limited_client = limited.client().await;
    // Rapid calls: the first refusal comes at the second call unless the machine stalls for
    // a whole second, so keep calling until one is refused.
    let mut refusal = Ok(());
    for _ in 0..10 {
        refusal = limited_client.list_users(list()).await.map(drop);
        if refusal.is_err() {
            break;
        }
    }
    table.row("ListUsers", "past the rate limit", describe(refusal));

    table.lock();
}

fn field_type(
    message: &prost_types::DescriptorProto,
    field: &prost_types::FieldDescriptorProto,
) -> String {
    use prost_types::field_descriptor_proto::Type;
    let map_entry = message.nested_type.iter().find(|nested| {
        nested
            .options
            .as_ref()
            .is_some_and(|options| options.map_entry())
            && field.type_name().ends_with(&format!(".{}", nested.name()))
    });
    if let Some(entry) = map_entry {
        let key = field_type(entry, &entry.field[0]);
        let value = field_type(entry, &entry.field[1]);
        return format!("map<{key}, {value}>");
    }
    match field.r#type() {
        Type::Message | Type::Enum => field.type_name().trim_start_matches('.').to_owned(),
        other => other
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_lowercase(),
    }
}

#[test]
fn api_surface_of_the_compiled_schema() {
    use prost_types::field_descriptor_proto::Label;
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = String::new();
    for file in set
        .file
        .iter()
        .filter(|file| file.package() == "userservice")
    {
        writeln!(out, "file {} (package {})", file.name(), file.package()).unwrap();
        for service in &file.service {
            writeln!(out, "service {}", service.name()).unwrap();
            for method in &service.method {
                let stream = |yes: bool| if yes { "stream " } else { "" };
                writeln!(
                    out,
                    "  rpc {}({}{}) returns ({}{})",
                    method.name(),
                    stream(method.client_streaming()),
                    method.input_type().trim_start_matches('.'),
                    stream(method.server_streaming()),
                    method.output_type().trim_start_matches('.'),
                )
                .unwrap();
            }
        }
        for message in &file.message_type {
            writeln!(out, "message {}", message.name()).unwrap();
            for field in &message.field {
                let is_map = field_type(message, field).starts_with("map<");
                let label = if field.proto3_optional() {
                    "optional "
                } else if field.label() == Label::Repeated && !is_map {
                    "repeated "
                } else {
                    ""
                };
                writeln!(
                    out,
                    "  {} = {}: {label}{}",
                    field.name(),
                    field.number(),
                    field_type(message, field)
                )
                .unwrap();
            }
        }
        for enumeration in &file.enum_type {
            writeln!(out, "enum {}", enumeration.name()).unwrap();
            for value in &enumeration.value {
                writeln!(out, "  {} = {}", value.name(), value.number()).unwrap();
            }
        }
    }
    snapshot!("api_surface", out);
}

#[test]
fn validation_limits() {
    let out = format!(
        "username: {}-{} characters, ASCII letters, digits, '_'\n\
         email: at most {} characters, RFC 5322 address with a dotted domain\n\
         password: {}-{} characters\n\
         full_name: at most {} characters, no control characters\n\
         metadata: at most {} entries; key 1-{} of [A-Za-z0-9_.-]; value 1-{} characters, no control characters\n\
         ListUsers page_size: 0 means {}, at most {}\n",
        limits::USERNAME_MIN_CHARS,
        limits::USERNAME_MAX_CHARS,
        limits::EMAIL_MAX_CHARS,
        limits::PASSWORD_MIN_CHARS,
        limits::PASSWORD_MAX_CHARS,
        limits::FULL_NAME_MAX_CHARS,
        limits::METADATA_MAX_ENTRIES,
        limits::METADATA_KEY_MAX_CHARS,
        limits::METADATA_VALUE_MAX_CHARS,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
    );
    snapshot!("validation_limits", out);
}

/// A method, the case, the request's headers and its JSON body.
type ConnectCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// Connect: the HTTP status and JSON body each kind of failure answers a JSON client.
#[tokio::test]
async fn status_codes_over_connect() {
    let (app, _, ann) = app_with_ann().await;
    let bearer = format!("Bearer {}", app.token("connect-admin", Role::Admin));
    let unknown = format!(r#"{{"userId":"{UNKNOWN_ID}"}}"#);
    let stale = format!(r#"{{"userId":"{}","fullName":"Ann","etag":"999"}}"#, ann.id);
    let authorized: &[(&str, &str)] = &[("authorization", &bearer)];
    let cases: [ConnectCase<'_>; 11] = [
        ("GetUser", "unknown id", authorized, &unknown),
        ("GetUser", "no token", &[], &unknown),
        ("GetUser", "body not JSON", authorized, r#"{"userId":"#),
        (
            "GetUser",
            "a field the message lacks",
            authorized,
            r#"{"user":"x"}"#,
        ),
        (
            "GetUser",
            "connect-timeout-ms not a number",
            &[("authorization", &bearer), ("connect-timeout-ms", "soon")],
            &unknown,
        ),
        (
            "CreateUser",
            "short username, bad email",
            authorized,
            r#"{"username":"x","email":"nope","password":"correct horse battery"}"#,
        ),
        (
            "CreateUser",
            "taken username",
            authorized,
            r#"{"username":"ann","email":"other@example.com","password":"correct horse battery"}"#,
        ),
        ("UpdateUser", "stale etag", authorized, &stale),
        ("Nope", "no such method", authorized, "{}"),
        (
            "BatchCreateUsers",
            "streams from the client",
            authorized,
            "{}",
        ),
        ("WatchUsers", "a stream called as unary", authorized, "{}"),
    ];
    let mut table = Table::new("status_codes_connect");
    for (method, case, headers, body) in cases {
        let mut headers = headers.to_vec();
        headers.push(("content-type", "application/json"));
        let path = format!("/userservice.UserService/{method}");

        let answer =
            crate::helpers::http1(app.addr, "POST", &path, &headers, body.as_bytes()).await;

        let retry = answer
            .header("retry-after")
            .map_or(String::new(), |secs| format!(" retry-after: {secs}"));
        table.row(
            method,
            case,
            format!("HTTP {}{retry} {}", answer.status, answer.text()),
        );
    }
    table.lock();
}
