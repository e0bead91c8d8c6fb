//! Entry points for the fuzz targets in `fuzz/`: the encodings of what storage reads back.

use crate::domain::User;

/// A user snapshot as the event log stores it; what decodes encodes back to the same.
pub fn decode_stored_user(bytes: &[u8]) -> Option<User> {
    let user = super::encoding::decode_user(bytes).ok()?;
    let again = super::encoding::decode_user(&super::encoding::encode_user(&user))
        .expect("what storage wrote, it reads back");
    assert_eq!(again, user, "a stored user round-trips");
    Some(user)
}

/// A metadata map as the user table stores it.
pub fn decode_stored_metadata(bytes: &[u8]) -> bool {
    super::encoding::decode_metadata(bytes).is_ok()
}
