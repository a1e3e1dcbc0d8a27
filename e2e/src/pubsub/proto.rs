//! The wire messages (a subset of `google.pubsub.v1`, published field numbers).

use std::collections::HashMap;

/// `google.pubsub.v1.Topic` (name = 1, labels = 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Topic {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(map = "string, string", tag = "2")]
    pub labels: HashMap<String, String>,
}

/// `google.pubsub.v1.PubsubMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PubsubMessage {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(map = "string, string", tag = "2")]
    pub attributes: HashMap<String, String>,
    #[prost(string, tag = "3")]
    pub message_id: String,
    #[prost(string, tag = "5")]
    pub ordering_key: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetTopicRequest {
    #[prost(string, tag = "1")]
    pub topic: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteTopicRequest {
    #[prost(string, tag = "1")]
    pub topic: String,
}

/// `google.pubsub.v1.UpdateTopicRequest` (the update mask is ignored: name and labels are replaced).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateTopicRequest {
    #[prost(message, optional, tag = "1")]
    pub topic: Option<Topic>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListTopicsRequest {
    #[prost(string, tag = "1")]
    pub project: String,
    #[prost(int32, tag = "2")]
    pub page_size: i32,
    #[prost(string, tag = "3")]
    pub page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListTopicsResponse {
    #[prost(message, repeated, tag = "1")]
    pub topics: Vec<Topic>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishRequest {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(message, repeated, tag = "2")]
    pub messages: Vec<PubsubMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishResponse {
    #[prost(string, repeated, tag = "1")]
    pub message_ids: Vec<String>,
}

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}
