//! Canonical proto3 JSON of the schema's messages, written and read by prost-reflect from the
//! compiled schema: what the CLI prints and reads, and what Connect clients send and receive.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor};
use serde_json::Value;

use crate::pb;

/// The compiled schema.
pub static SCHEMA: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the compiled schema decodes")
});

/// The schema's message type `name` (`userservice.User`); `name` is one of the schema's.
pub fn message(name: &str) -> MessageDescriptor {
    SCHEMA
        .get_message_by_name(name)
        .expect("a message of the schema")
}

/// Protobuf bytes of type `descriptor` as canonical proto3 JSON: lowerCamelCase names in
/// schema order, enum names, int64 as strings, RFC 3339 timestamps, default values left
/// out. Map entries are sorted by key, so the output never depends on hashing.
pub fn to_value(descriptor: &MessageDescriptor, bytes: &[u8]) -> Result<Value, String> {
    let dynamic =
        DynamicMessage::decode(descriptor.clone(), bytes).map_err(|err| err.to_string())?;
    // Fails only for a value JSON cannot write (a timestamp past year 9999).
    let mut value = serde_json::to_value(&dynamic).map_err(|err| err.to_string())?;
    sort_maps(descriptor, &mut value);
    Ok(value)
}

/// A proto3 JSON message of type `descriptor` as protobuf bytes, read straight from the text
/// (no JSON tree in between). A field the schema does not know is an error, not silently
/// dropped.
pub fn to_protobuf(descriptor: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, String> {
    use prost::Message as _;
    let mut reader = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize(descriptor.clone(), &mut reader)
        .map_err(|err| err.to_string())?;
    reader.end().map_err(|err| err.to_string())?;
    Ok(message.encode_to_vec())
}

fn sort_maps(descriptor: &MessageDescriptor, value: &mut Value) {
    let Value::Object(object) = value else {
        return;
    };
    for field in descriptor.fields() {
        let Some(entry) = object.get_mut(field.json_name()) else {
            continue;
        };
        if field.is_map() {
            if let Value::Object(map) = entry {
                map.sort_keys();
            }
        } else if let Kind::Message(inner) = field.kind() {
            match entry {
                Value::Array(items) => items.iter_mut().for_each(|item| sort_maps(&inner, item)),
                item => sort_maps(&inner, item),
            }
        }
    }
}
