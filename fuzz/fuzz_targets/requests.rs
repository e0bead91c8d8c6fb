//! Every request message, decoded from arbitrary bytes and passed through the conversion and
//! validation the handlers use: nothing panics, and what is accepted validates again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use user_service::domain::{Credential, Email, FullName, Password, PasswordStrength, Username};
use user_service::grpc::convert::{parse_create, parse_lookup_id, parse_update, parse_user_id};
use user_service::pb;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 7 {
        0 => {
            if let Ok(request) = pb::CreateUserRequest::decode(bytes)
                && let Ok(draft) =
                    parse_create(request, PasswordStrength::new(PasswordStrength::DEFAULT_SCORE))
            {
                assert!(Username::parse(draft.username.as_str().to_owned()).is_ok());
                assert!(Email::parse(draft.email.as_str().to_owned()).is_ok());
                assert!(FullName::parse(draft.full_name.as_str().to_owned()).is_ok());
                match &draft.credential {
                    Credential::Password(password) => {
                        assert!(Password::parse(password.expose().to_owned()).is_ok());
                    }
                    // Only hashes of an algorithm the server verifies are imported.
                    Credential::Imported(hash) => assert!(hash.scheme().is_some()),
                }
            }
        }
        1 => {
            if let Ok(request) = pb::UpdateUserRequest::decode(bytes) {
                let _ = parse_update(request);
            }
        }
        2 => {
            if let Ok(request) = pb::GetUserRequest::decode(bytes) {
                // Only an empty id is refused: anything else names a user or none.
                assert_eq!(
                    parse_lookup_id(&request.user_id).is_ok(),
                    !request.user_id.is_empty()
                );
            }
        }
        3 => {
            if let Ok(request) = pb::DeleteUserRequest::decode(bytes) {
                let _ = parse_lookup_id(&request.user_id);
            }
        }
        4 => {
            if let Ok(request) = pb::WatchUsersRequest::decode(bytes) {
                for (index, id) in request.user_ids.iter().enumerate() {
                    let _ = parse_user_id(&format!("user_ids[{index}]"), id);
                }
            }
        }
        5 => {
            if let Ok(request) = pb::ListUsersRequest::decode(bytes) {
                let filters = user_service::grpc::page_token::Filters {
                    status: None,
                    role: None,
                };
                let seal = user_service::grpc::page_token::TokenSeal::new(&[7; 32]);
                let _ = user_service::grpc::page_token::decode(&seal, &request.page_token, filters);
            }
        }
        _ => {
            if let Ok(request) = pb::LoginRequest::decode(bytes) {
                let _ = Username::parse(request.username);
                let _ = Password::parse(request.password);
            }
        }
    }
});
