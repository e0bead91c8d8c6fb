//! The code generated from `schema/user.proto`, and its encoded descriptor set.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("userservice");

/// The compiled schema, as served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("user_descriptor");
